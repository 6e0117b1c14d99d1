"""DRF's content negotiation, skipped for the requests that can only get JSON.

Every API answer is JSON (the one renderer). DRF still parsed and ranked the
Accept header on every request: 8% of a `GET /health` through Django in a
profile. A request with no Accept header, `*/*` or `application/json`, and no
`?format=`, gets what DRF would have chosen, directly; anything else
(`text/html`: 406, media type parameters) goes through DRF as before.
"""

from rest_framework.negotiation import DefaultContentNegotiation

_PLAIN = (None, "*/*", "application/json")


class JsonNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        meta = request.META
        if (
            format_suffix is None
            and not meta.get("QUERY_STRING")
            and meta.get("HTTP_ACCEPT") in _PLAIN
            and renderers
            and renderers[0].media_type == "application/json"
        ):
            return renderers[0], "application/json"
        return super().select_renderer(request, renderers, format_suffix)
