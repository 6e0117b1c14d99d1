"""Projects, environments and their keys.

Keys are random, shown once, and stored as HMAC-SHA-256 digests keyed with the
server secret: one indexed lookup per check, no slow password hash on the hot
path. A key's prefix names its kind, but the kind is checked against the
stored row, so a key of the wrong kind is simply not found.
"""

import hashlib
import hmac
import secrets
from functools import lru_cache

from django.conf import settings
from django.db import transaction

from stepstream.models import ENVIRONMENTS, ApiKey, Environment, Project

PREFIXES = {"secret": "sk_", "publishable": "pk_"}


@lru_cache(maxsize=1)
def _digest_key() -> bytes:
    return hashlib.sha256(b"stepstream-key-digest:" + settings.SECRET_KEY.encode()).digest()


def digest(key: str) -> str:
    return hmac.new(_digest_key(), key.encode(), hashlib.sha256).hexdigest()


def new_key(environment: Environment, kind: str) -> str:
    key = PREFIXES[kind] + secrets.token_urlsafe(32)
    ApiKey.objects.create(environment=environment, kind=kind, digest=digest(key))
    return key


def create_project(name: str) -> dict:
    """Creates a project with its environments; the only time keys are visible."""
    with transaction.atomic():
        project = Project.objects.create(name=name)
        environments = []
        for identifier in ENVIRONMENTS:
            env = Environment.objects.create(project=project, identifier=identifier)
            environments.append(
                {
                    "identifier": identifier,
                    "publishable_key": new_key(env, "publishable"),
                    "secret_key": new_key(env, "secret"),
                }
            )
    return {"project": name, "environments": environments}


def environment_for_key(key: str | None, kind: str) -> Environment | None:
    """The environment a live key of this kind belongs to, or None."""
    if not key or len(key) > 200:
        return None
    row = (
        ApiKey.objects.select_related("environment")
        .filter(digest=digest(key), kind=kind, revoked_at__isnull=True)
        .first()
    )
    return row.environment if row else None
