"""Pages outside the API (the demo) and Django's error handlers, all answering JSON.

Every error body the server sends is `{"errors": [sentence], "code": ...}`,
unknown routes and methods included; the root URLconf (stepstream.http.urls)
names these as Django's handler400/403/404/500 and settings names
`csrf_failure` as CSRF_FAILURE_VIEW. A sentence never repeats the request's
path: it may hold anything a client sent.
"""

import json
import os

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from stepstream import config


def error_response(status: int, code: str, sentence: str, **headers) -> JsonResponse:
    response = JsonResponse({"errors": [sentence], "code": code}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def bad_request(request, exception=None):
    return error_response(400, "invalid", "The request is malformed.")


def forbidden(request, exception=None):
    return error_response(403, "forbidden", "This request is not allowed.")


def not_found(request, exception=None):
    return error_response(404, "not_found", f"Nothing is served at this {request.method} path.")


def server_error(request):
    return error_response(500, "internal", "The server failed to answer; it has been logged.")


def csrf_failure(request, reason=""):
    return error_response(
        403, "forbidden", "The form's CSRF token is missing or wrong: reload the page."
    )


def methods(*allowed: str):
    """Serves only these methods; any other gets 405 with an Allow header (JSON body)."""
    allow = ", ".join(allowed)

    def decorate(view):
        def checked(request, *args, **kwargs):
            if request.method not in allowed:
                return error_response(
                    405,
                    "method_not_allowed",
                    f"The method {request.method} is not allowed here; use {allow}.",
                    Allow=allow,
                )
            return view(request, *args, **kwargs)

        checked.__name__, checked.__doc__ = view.__name__, view.__doc__
        return checked

    return decorate


@methods("GET", "HEAD")
def home(request):
    """`GET /`: where a newcomer lands, linking what this server serves."""
    from stepstream import __version__

    context = {"version": __version__, "demo": _demo_keys() is not None}
    return render(request, "stepstream/home.html", context)


def _demo_keys() -> dict | None:
    path = config.data_dir() / "demo.json"
    if not os.environ.get("STEPSTREAM_DEMO") or not path.exists():
        return None
    return json.loads(path.read_text())


@csrf_exempt  # it serves reads only: a POST is a 405, not a CSRF failure
@methods("GET", "HEAD")
def demo(request):
    path = config.data_dir() / "demo.json"
    if not os.environ.get("STEPSTREAM_DEMO") or not path.exists():
        return error_response(
            404, "not_found", "No demo here: start the server with `stepstream serve --demo`."
        )
    from stepstream.http.demo import DEMO_PERSON

    keys = json.loads(path.read_text())
    context = {"config": {"key": keys["publishable_key"], "personKey": DEMO_PERSON}}
    return render(request, "stepstream/demo.html", context)


@csrf_exempt  # same-origin only, checked below: the demo page has no session to bind a token to
@methods("POST")
def demo_reset(request):
    """`POST /demo/reset`: the demo page's "Start over" button."""
    if _demo_keys() is None:
        return error_response(
            404, "not_found", "No demo here: start the server with `stepstream serve --demo`."
        )
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.get_host()}":
        return error_response(403, "forbidden", "Only the demo page itself may reset the demo.")
    from stepstream.http import demo

    return JsonResponse({"reset": demo.reset()})
