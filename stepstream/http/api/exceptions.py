"""Renders every REST error as {"errors": [sentences], "code": ...} with its status."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DataError, InterfaceError, OperationalError
from rest_framework import exceptions
from rest_framework.response import Response

from stepstream.errors import StepstreamError


def _sentences(detail) -> list[str]:
    if isinstance(detail, list):
        return [s for item in detail for s in _sentences(item)]
    if isinstance(detail, dict):
        return [f"{k}: {s}" for k, v in detail.items() for s in _sentences(v)]
    return [str(detail)]


def unsupported_media_type(media_type: str) -> str:
    """The 415's sentence: what was sent, and what to send instead."""
    given = f'"{media_type[:100]}"' if media_type else "no Content-Type"
    return (
        f"The request body was sent as {given}: send it as JSON, with the header "
        "'Content-Type: application/json'."
    )


def exception_handler(exc, context):
    if isinstance(exc, StepstreamError):
        return Response({"errors": exc.messages, "code": exc.code}, status=exc.status)
    if isinstance(exc, RequestDataTooBig):  # stepstream.http.bodylimit answers first when served
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {
                "errors": [f"The request body is larger than the limit of {limit} bytes."],
                "code": "too_large",
            },
            status=413,
        )
    if isinstance(exc, DataError):
        return Response(
            {
                "errors": ["A value in the request cannot be stored (bad characters or size)."],
                "code": "invalid",
            },
            status=400,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        return Response(
            {"errors": ["The database is unavailable; retry shortly."], "code": "unavailable"},
            status=503,
        )
    if isinstance(exc, exceptions.UnsupportedMediaType):
        request = context.get("request")
        media_type = getattr(request, "content_type", "") or ""
        return Response(
            {"errors": [unsupported_media_type(media_type)], "code": exc.default_code},
            status=exc.status_code,
        )
    if isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "invalid"
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = 'Bearer realm="stepstream"'
            code = "unauthenticated"
        return Response(
            {"errors": _sentences(exc.detail), "code": code},
            status=exc.status_code,
            headers=headers,
        )
    return None
