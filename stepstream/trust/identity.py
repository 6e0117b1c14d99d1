"""Identity verification: proving that a WebSocket request comes from the person it names.

The publishable key is public, so on its own it lets anyone name any person.
With verification, the customer's backend mints a *person token* for its
signed-in user: a JWT signed with HS256, its key the environment's identity
secret (the string's UTF-8 bytes), `sub` the person_key and a required `exp`.
The browser passes it as `data.person_token` on every action naming a person.

Per environment, `verification_mode` is

* `off`: tokens are ignored;
* `rollout`: every request is served; those carrying a valid token for the
  person they name are counted as signed, all others as unsigned, so the
  customer sees when every client sends good tokens;
* `enforce`: a request without a valid token is refused: 401 (missing,
  malformed, wrong signature, expired, no `exp`) or 403 (a valid token for
  another person). Nothing is read before the check, so a refused request
  learns nothing, not even whether the person exists.

WebSocket connections check against a per-process copy of each environment's
mode and secret, taken at connect and refreshed every
`STEPSTREAM_KEY_CHECK_INTERVAL` seconds by `stepstream.ws.guard`, which also
writes the counters (one UPDATE with F() per environment and round, never one
per request).

The identity secret is shown once, when made, and stored as is (HS256 needs
it to verify); it appears in no later response, log line or admin page.
"""

import secrets
from collections import Counter
from dataclasses import dataclass

import jwt
from django.db import transaction
from django.db.models import F

from stepstream.errors import Conflict, Forbidden, Invalid, Unauthenticated
from stepstream.models import Environment

MODES = ("off", "rollout", "enforce")
SECRET_PREFIX = "ids_"
TOKEN_FIELD = "person_token"


# -- management (REST, secret key) ------------------------------------------


def new_secret(environment: Environment) -> dict:
    """Makes and stores a new identity secret; the answer is the only time it is shown.

    Tokens signed with the previous secret stop verifying at once (in every
    process within STEPSTREAM_KEY_CHECK_INTERVAL).
    """
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    Environment.objects.filter(pk=environment.pk).update(identity_secret=secret)
    return {"identity_secret": secret}


def describe(environment: Environment) -> dict:
    row = (
        Environment.objects.filter(pk=environment.pk)
        .values("verification_mode", "signed_requests", "unsigned_requests", "identity_secret")
        .get()
    )
    return {
        "mode": row["verification_mode"],
        "signed_requests": row["signed_requests"],
        "unsigned_requests": row["unsigned_requests"],
        "has_identity_secret": bool(row["identity_secret"]),
    }


def set_mode(environment: Environment, body) -> dict:
    if not isinstance(body, dict):
        raise Invalid(
            'The request body must be a JSON object: {"mode": "off" | "rollout" | "enforce"}.'
        )
    mode = body.get("mode")
    if mode not in MODES:
        raise Invalid("mode is required and must be 'off', 'rollout' or 'enforce'.")
    with transaction.atomic():
        row = Environment.objects.select_for_update().get(pk=environment.pk)
        if mode == "enforce" and not row.identity_secret:
            raise Conflict(
                "Cannot enforce identity verification without an identity secret: create one "
                "with POST /api/v1/identity-verification/secret, have your backend sign person "
                "tokens with it, then enforce."
            )
        row.verification_mode = mode
        row.save(update_fields=["verification_mode"])
    return describe(environment)


# -- checking person tokens ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str
    secret: str


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified person token allows: living until `expires` (Unix seconds) under `secret`."""

    secret: str
    expires: float


class Policies:
    """What one server process enforces per environment (mode and secret, as last read) and
    the signed/unsigned requests it counted since the last flush: owned by the runtime's
    connection guard (stepstream.ws.guard), which re-reads and flushes them each interval."""

    def __init__(self) -> None:
        self._policies: dict[int, Policy] = {}  # environment id -> what is enforced
        self._counts: Counter = Counter()  # (environment id, signed?) -> requests

    def remember(self, environment: Environment) -> None:
        """Takes the environment's mode and secret as loaded (at connect)."""
        self._policies[environment.pk] = Policy(
            environment.verification_mode, environment.identity_secret
        )

    def policy(self, environment: Environment) -> Policy:
        found = self._policies.get(environment.pk)
        if found is None:
            self.remember(environment)
            found = self._policies[environment.pk]
        return found

    def update(self, fresh: dict[int, Policy], keep) -> None:
        """Installs freshly read policies; forgets environments no connection uses any more."""
        keep = set(keep)
        for pk in list(self._policies):
            if pk not in keep:
                del self._policies[pk]
        for pk, found in fresh.items():
            if pk in keep:
                self._policies[pk] = found

    def take_counts(self) -> Counter:
        taken, self._counts = self._counts, Counter()
        return taken

    def put_back(self, counts: Counter) -> None:
        """Counts a failed flush could not save, kept for the next one."""
        self._counts.update(counts)

    def check(self, environment: Environment, person_key: str, data: dict) -> Grant | None:
        """Applies the environment's verification mode to one request naming `person_key`.

        Returns the Grant of a valid token (whatever the mode, so a subscription
        made before verification was enforced keeps living by its token), else None.
        """
        found = self.policy(environment)
        token = data.get(TOKEN_FIELD)
        if found.mode == "off":
            if token is None or not found.secret:
                return None
            try:
                return _grant(found.secret, verify_token(token, found.secret, person_key))
            except (Unauthenticated, Forbidden):
                return None
        if found.mode == "enforce":
            try:
                claims = verify_token(token, found.secret, person_key)
            except (Unauthenticated, Forbidden):
                self._counts[(environment.pk, False)] += 1
                raise
            self._counts[(environment.pk, True)] += 1
            return _grant(found.secret, claims)
        try:
            grant = _grant(found.secret, verify_token(token, found.secret, person_key))
        except (Unauthenticated, Forbidden):
            grant = None
        self._counts[(environment.pk, grant is not None)] += 1
        return grant


def load_policies(environment_ids) -> dict[int, Policy]:
    """Reads the current mode and secret of these environments (a database thread)."""
    rows = Environment.objects.filter(pk__in=list(environment_ids)).values_list(
        "pk", "verification_mode", "identity_secret"
    )
    return {pk: Policy(mode, secret) for pk, mode, secret in rows}


def save_counts(counts: Counter) -> None:
    """Adds the gathered counts to the environments' counters (a database thread)."""
    per_env: dict[int, list[int]] = {}
    for (pk, signed), n in counts.items():
        per_env.setdefault(pk, [0, 0])[0 if signed else 1] += n
    for pk, (signed, unsigned) in per_env.items():
        Environment.objects.filter(pk=pk).update(
            signed_requests=F("signed_requests") + signed,
            unsigned_requests=F("unsigned_requests") + unsigned,
        )


def verify_token(token, secret: str, person_key: str) -> dict:
    """The token's claims; raises Unauthenticated (401) or Forbidden (403) unless it is valid."""
    if token is None:
        raise Unauthenticated(
            "Identity verification is enforced in this environment: data.person_token is "
            "missing. Send a person token (a JWT signed with HS256 with the identity secret, "
            "sub = the person_key, with an exp) minted by your backend."
        )
    if not isinstance(token, str) or not token or token.count(".") != 2 or len(token) > 8192:
        raise Unauthenticated(
            "data.person_token is malformed: it must be a JWT (header.payload.signature)."
        )
    if not secret:
        raise Unauthenticated(
            "data.person_token cannot be verified: this environment has no identity secret."
        )
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp", "sub"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("data.person_token has expired; mint a new one.") from None
    except jwt.MissingRequiredClaimError as e:
        raise Unauthenticated(
            f"data.person_token has no '{e.claim}' claim; person tokens need sub (the "
            "person_key) and exp."
        ) from None
    except jwt.InvalidSignatureError:
        raise Unauthenticated(
            "data.person_token is not signed with this environment's identity secret."
        ) from None
    except jwt.InvalidAlgorithmError:
        raise Unauthenticated("data.person_token must be signed with HS256.") from None
    except jwt.ImmatureSignatureError:
        raise Unauthenticated(
            "data.person_token is not valid yet (nbf or iat in the future)."
        ) from None
    except jwt.InvalidTokenError:
        raise Unauthenticated(
            "data.person_token is malformed or has an invalid claim (sub must be a string, "
            "exp a number)."
        ) from None
    if isinstance(claims["exp"], bool) or not isinstance(claims["exp"], int | float):
        # PyJWT reads exp with int(), so "9999999999" (a string) would pass
        raise Unauthenticated(
            "data.person_token's exp must be a number (seconds since 1970), not a string."
        )
    if claims["sub"] != person_key:
        raise Forbidden("data.person_token was issued for another person than data.person_key.")
    return claims


def _grant(secret: str, claims: dict) -> Grant:
    return Grant(secret, float(claims["exp"]))


def lapsed(found: Policy, grant: Grant | None, now: float) -> str | None:
    """Why a subscription made with `grant` may not live on under `found`, or None.

    Only `enforce` ends subscriptions. No leeway on `exp`: a token is
    expired from its `exp` second on, as PyJWT decides.
    """
    if found.mode != "enforce":
        return None
    if grant is None:
        return (
            "Identity verification is now enforced in this environment: subscribe again "
            "with a valid data.person_token."
        )
    if grant.secret != found.secret:
        return (
            "The identity secret changed: this subscription's person token is no longer "
            "valid; subscribe again with a fresh one."
        )
    if now >= grant.expires:
        return "The person token of this subscription expired; subscribe again with a fresh one."
    return None
