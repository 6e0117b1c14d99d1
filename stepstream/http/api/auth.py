"""Bearer secret-key authentication: the request's environment is `request.auth`."""

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from stepstream.trust import tenants


class SecretKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed(
                "Missing secret key: send the header 'Authorization: Bearer <secret key>'."
            )
        environment = tenants.environment_for_key(key.strip(), "secret")
        if environment is None:
            raise AuthenticationFailed("The secret key is not valid.")
        return (None, environment)

    def authenticate_header(self, request):
        return 'Bearer realm="stepstream"'


class HasEnvironment(BasePermission):
    def has_permission(self, request, view):
        return request.auth is not None
