"""Projects, environments and their keys.

Keys are random, shown once, and stored as HMAC-SHA-256 digests keyed with the
server secret: one indexed lookup per check, no slow password hash on the hot
path. A key's prefix names its kind, but the kind is checked against the
stored row, so a key of the wrong kind is simply not found.

Comparison is constant-time where it matters: a presented key is never
compared with a stored one. Its keyed digest is computed (always the same
work) and looked up; an attacker who cannot compute digests learns nothing
from how long the lookup of one takes. The digest found is checked again
with `hmac.compare_digest`.

Lifecycle: an environment may hold several live keys of each kind. A new
key works at once; an old one keeps working until it is revoked, and a
revoked publishable key's open WebSocket connections are closed with 4403
within seconds (`stepstream.ws.guard`).
"""

import hashlib
import hmac
import secrets
from datetime import UTC
from functools import lru_cache

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from stepstream import rows
from stepstream.engine import audit
from stepstream.errors import Conflict, Invalid, NotFound
from stepstream.models import ENVIRONMENTS, ApiKey, Environment, Project
from stepstream.trust import keycache

PREFIXES = {"secret": "sk_", "publishable": "pk_"}
MAX_KEY_LENGTH = 200  # longer is never a key: not even hashed
_CHUNK = 500  # keys per query: bound parameters stay well under SQLite's limit
HINT_LENGTH = 7  # "pk_" and 4 of the 43 random characters


@lru_cache(maxsize=1)
def _digest_key() -> bytes:
    return hashlib.sha256(b"stepstream-key-digest:" + settings.SECRET_KEY.encode()).digest()


def digest(key: str) -> str:
    return hmac.new(_digest_key(), key.encode(), hashlib.sha256).hexdigest()


def create_key(environment: Environment, kind: str) -> tuple[ApiKey, str]:
    """A new live key of this kind: its row and the key itself (never stored)."""
    key = PREFIXES[kind] + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(
        environment=environment, kind=kind, digest=digest(key), hint=key[:HINT_LENGTH]
    )
    return row, key


def new_key(environment: Environment, kind: str) -> str:
    return create_key(environment, kind)[1]


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
    return {"project": name, "project_id": project.pk, "environments": environments}


def key_row(key: str | None, kind: str, revoked_too: bool = False) -> ApiKey | None:
    """The live key row (with its environment) of this kind matching `key`, or None.

    With `revoked_too`, a revoked key's row too (its `revoked_at` set), so the
    WebSocket can tell a revoked key (4403) from a wrong one (4401).
    """
    if not key or not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    wanted = digest(key)
    matching = ApiKey.objects.select_related("environment").filter(digest=wanted, kind=kind)
    if not revoked_too:
        matching = matching.filter(revoked_at__isnull=True)
    row = matching.first()
    if row is None or not hmac.compare_digest(row.digest, wanted):
        return None
    return row


_key_rows_sql: dict[str, tuple] = {}  # per database vendor: the query and the converters


def _key_rows_query() -> tuple:
    """The key-and-environment query and its converters, found once per vendor.

    Found again for each of a reconnect storm's small batches, they were two thirds
    of a one-key read (175 µs, now 57). The converters take the caller's
    connection; of the one they were found on they read only its settings.
    """
    found = _key_rows_sql.get(connection.vendor)
    if found is None:
        key_columns = list(ApiKey._meta.concrete_fields)
        env_columns = list(Environment._meta.concrete_fields)
        qn = connection.ops.quote_name
        select = (
            f"SELECT {rows.columns('k', key_columns)}, "  # noqa: S608 - no input in the text
            f"{rows.columns('e', env_columns)} "
            f"FROM {qn(ApiKey._meta.db_table)} k JOIN {qn(Environment._meta.db_table)} e "
            f"ON e.id = k.environment_id WHERE k.kind = %s AND k.digest IN "
        )
        steps = (rows.converters(key_columns), rows.converters(env_columns))
        found = _key_rows_sql[connection.vendor] = (select, key_columns, env_columns, *steps)
    return found


def key_rows(keys: list[str], kind: str) -> dict[str, ApiKey]:
    """`key_row(key, kind, revoked_too=True)` for many keys in one query: {key: row}.

    A reconnect storm's connects share a few keys; built through the ORM, the
    query cost more than running it. Each row comes with its environment, both
    through the fields' own database converters, as the ORM gives them.
    """
    wanted = {digest(key): key for key in keys if key and len(key) <= MAX_KEY_LENGTH}
    if not wanted:
        return {}
    select, key_columns, env_columns, key_steps, env_steps = _key_rows_query()
    split = len(key_columns)
    digests = list(wanted)
    found = {}
    with connection.cursor() as cursor:
        for start in range(0, len(digests), _CHUNK):  # distinct keys (wrong ones too) are many
            chunk = digests[start : start + _CHUNK]
            cursor.execute(select + f"({', '.join(['%s'] * len(chunk))})", [kind, *chunk])
            for values in cursor.fetchall():
                row = rows.instance(ApiKey, key_columns, values[:split], key_steps)
                row.environment = rows.instance(Environment, env_columns, values[split:], env_steps)
                if row.digest in wanted:  # equal to a digest computed here, as SQL compared
                    found[wanted[row.digest]] = row
    return found


def environment_for_key(
    key: str | None, kind: str, memory: "keycache.KeyMemory | None" = None
) -> Environment | None:
    """The environment a live key of this kind belongs to, or None.

    With a server runtime's `memory` (stepstream.trust.keycache), remembered once
    found: no query per request while the broker can tell of revocations, one
    small one otherwise. Without (a command, a test client), looked up each time.
    """
    if not key or not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    if memory is None:
        row = key_row(key, kind)
        return row.environment if row is not None else None
    return memory.environment(digest(key), kind, lambda: key_row(key, kind))


# -- lifecycle ----------------------------------------------------------------


def _timestamp(dt) -> str | None:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if dt else None


def describe_key(row: ApiKey) -> dict:
    """A key without its secret part."""
    return {
        "id": row.pk,
        "kind": row.kind,
        "hint": row.hint,
        "created_at": _timestamp(row.created_at),
        "revoked_at": _timestamp(row.revoked_at),
    }


def list_keys(environment: Environment) -> list[dict]:
    return [describe_key(row) for row in environment.keys.order_by("pk")]


def check_kind(kind) -> str:
    if not isinstance(kind, str) or kind not in PREFIXES:  # {"kind": {}} was a 500
        raise Invalid("kind is required and must be 'secret' or 'publishable'.")
    return kind


def add_key(environment: Environment, kind, actor: str = "cli") -> dict:
    """Creates a key; the answer is the only place the key itself ever appears."""
    with transaction.atomic():
        row, key = create_key(environment, check_kind(kind))
        audit.record(environment.pk, actor, "key.create", f"key:{row.pk}", {"kind": row.kind})
    return {**describe_key(row), "key": key}


def revoke_key(environment: Environment, key_id, actor: str = "cli") -> dict:
    """Revokes one of the environment's keys (idempotent); its last live secret key stays."""
    if isinstance(key_id, bool) or not isinstance(key_id, int | str) or not str(key_id).isdigit():
        raise NotFound(f"No key with id {key_id} in this environment.")
    with transaction.atomic():
        # the environment's row is locked so two revocations cannot leave it keyless
        Environment.objects.select_for_update().filter(pk=environment.pk).first()
        row = ApiKey.objects.filter(environment=environment, pk=int(key_id)).first()
        if row is None:
            raise NotFound(f"No key with id {key_id} in this environment.")
        if row.revoked_at is None:
            if row.kind == "secret" and not (
                ApiKey.objects.filter(environment=environment, kind="secret", revoked_at=None)
                .exclude(pk=row.pk)
                .exists()
            ):
                raise Conflict(
                    f"Key {row.pk} is this environment's only live secret key; revoking it "
                    "would lock you out. Create a new secret key first, then revoke this one."
                )
            row.revoked_at = timezone.now()
            row.save(update_fields=["revoked_at"])
            audit.record(environment.pk, actor, "key.revoke", f"key:{row.pk}", {"kind": row.kind})
    return describe_key(row)  # saved: every process forgets its keys (keycache.watch_keys)


def rotate(environment: Environment, kinds: list[str], actor: str = "cli") -> dict:
    """New keys of these kinds; the old ones stay valid until revoked."""
    with transaction.atomic():
        old = list(
            environment.keys.filter(kind__in=kinds, revoked_at=None)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        made = {kind: create_key(environment, kind) for kind in kinds}
        for kind, (row, _) in made.items():
            audit.record(environment.pk, actor, "key.create", f"key:{row.pk}", {"kind": kind})
    answer = {
        "project": environment.project.name,
        "project_id": environment.project_id,
        "environment": environment.identifier,
    }
    for kind, (_, key) in made.items():
        answer[f"{kind}_key"] = key
    answer["new_key_ids"] = {kind: row.pk for kind, (row, _) in made.items()}
    answer["old_key_ids"] = old
    return answer


def find_environment(name: str) -> Environment:
    """An environment named "PROJECT/IDENTIFIER", PROJECT being a project's id or its name.

    Project names need not be unique: an ambiguous name is refused, listing the ids.
    """
    project_part, slash, identifier = name.rpartition("/")
    if not slash or not project_part or not identifier:
        raise Invalid(
            f"name the environment as PROJECT/ENVIRONMENT, e.g. 'Acme/production' or "
            f"'12/production' (a project id), not '{name}'."
        )
    projects = list(Project.objects.filter(name=project_part).order_by("pk"))
    if not projects and project_part.isdigit():
        projects = list(Project.objects.filter(pk=int(project_part)))
    if not projects:
        raise NotFound(f"No project named '{project_part}' (nor with that id).")
    if len(projects) > 1:
        ids = ", ".join(str(p.pk) for p in projects)
        raise Invalid(
            f"{len(projects)} projects are named '{project_part}' (ids {ids}); "
            f"name one by its id, e.g. '{projects[-1].pk}/{identifier}'."
        )
    env = Environment.objects.filter(project=projects[0], identifier=identifier).first()
    if env is None:
        known = ", ".join(projects[0].environments.values_list("identifier", flat=True))
        raise NotFound(
            f"Project '{projects[0].name}' has no environment '{identifier}' (it has: {known})."
        )
    return env
