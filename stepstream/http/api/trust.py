"""REST calls for trust (secret key): identity verification, keys, allowed origins.

Each acts on the environment of the secret key used, and on nothing else: a
key id of another environment is a 404 like an unknown one.
"""

from rest_framework.decorators import api_view
from rest_framework.response import Response

from stepstream.errors import Invalid
from stepstream.http.api.views import actor
from stepstream.trust import identity, origins, tenants


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise Invalid('The request body must be a JSON object: {"kind": "secret" | "publishable"}.')
    return request.data


@api_view(["POST"])
def identity_secret(request):
    """A new identity secret, shown in this answer only; tokens of the old one stop working."""
    return Response(identity.new_secret(request.auth), status=201)


@api_view(["GET", "PUT"])
def identity_verification(request):
    if request.method == "PUT":
        return Response(identity.set_mode(request.auth, request.data))
    return Response(identity.describe(request.auth))


@api_view(["GET", "POST"])
def keys(request):
    """Lists the environment's keys (never the keys themselves) or makes a new one."""
    if request.method == "POST":
        kind = _body(request).get("kind")
        return Response(tenants.add_key(request.auth, kind, actor(request)), status=201)
    return Response(tenants.list_keys(request.auth))


@api_view(["POST"])
def revoke_key(request, key_id):
    return Response(tenants.revoke_key(request.auth, key_id, actor(request)))


@api_view(["GET", "PUT"])
def allowed_origins(request):
    if request.method == "PUT":
        return Response(origins.set_allowed(request.auth, request.data))
    return Response(origins.describe(request.auth))
