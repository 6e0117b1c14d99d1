"""Bearer secret-key authentication: the request's environment is `request.auth`."""

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from stepstream.http.health import RUNTIME_KEY
from stepstream.trust import tenants

MISSING_KEY = "Missing secret key: send the header 'Authorization: Bearer <secret key>'."
WRONG_KEY = "The secret key is not valid."
# A key's prefix names its kind (stepstream.trust.tenants.PREFIXES): the sentence needs no lookup.
PUBLISHABLE_KEY = (
    "A publishable key (pk_...) was sent: it is for the WebSocket (the browser). The REST "
    "API needs the environment's secret key (sk_...): 'Authorization: Bearer sk_...'."
)


def wrong_key(key: str) -> str:
    """Why a presented key was refused, in one sentence: a publishable key is named as such."""
    if key.startswith(tenants.PREFIXES["publishable"]):
        return PUBLISHABLE_KEY
    return WRONG_KEY


class SecretKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed(MISSING_KEY)
        runtime = request.META.get(RUNTIME_KEY)  # the server's, with its key memory
        memory = runtime.keys if runtime is not None else None
        environment = tenants.environment_for_key(key.strip(), "secret", memory)
        if environment is None:
            raise AuthenticationFailed(wrong_key(key.strip()))
        return (None, environment)

    def authenticate_header(self, request):
        return 'Bearer realm="stepstream"'


class HasEnvironment(BasePermission):
    def has_permission(self, request, view):
        return request.auth is not None
