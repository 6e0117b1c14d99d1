"""Django's static files as served by `stepstream serve` (the SDK among them)."""

from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404


class StaticFiles(StaticFilesHandler):
    """Django's static files, for anyone: any origin may load them (the SDK is imported
    as a JS module from customers' pages), a path that climbs out of the static
    directories is a 404 (Django raised SuspiciousFileOperation: a 500), and
    methods other than GET and HEAD are 405."""

    def serve(self, request):
        from stepstream.http.views import error_response  # once Django is set up

        if request.method not in ("GET", "HEAD"):
            return error_response(
                405,
                "method_not_allowed",
                f"The method {request.method} is not allowed here; use GET, HEAD.",
                Allow="GET, HEAD",
            )
        try:
            response = super().serve(request)
        except SuspiciousFileOperation:
            raise Http404("outside the static directories") from None
        response["Access-Control-Allow-Origin"] = "*"
        return response
