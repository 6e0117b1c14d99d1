"""Throttling of the dashboard's sign-in: per username and per client address.

Every POST to /dashboard/login/ is counted *before* its password is checked,
under two keys: the username and the client address. When either key has
reached STEPSTREAM_LOGIN_MAX_FAILURES (at most 20) attempts in a row, further
attempts are refused with 429 and `Retry-After` until its lockout ends
(STEPSTREAM_LOGIN_LOCKOUT_SECONDS after the attempt that reached the limit),
and the password hasher is never run for them: a refusal costs one indexed
read. A successful sign-in removes both keys' counts. An attempt more than a
lockout time after the previous one of its key starts the count again.

Counting before checking, and reading the counts again after counting, means
concurrent attempts (threads, `serve --workers N`, machines sharing the
database) cannot check more passwords than the limit between them: one that
finds its key already past the limit is refused unchecked.

The counts are rows of `LoginThrottle` in the database, so every server
process shares them, on SQLite and PostgreSQL alike. Keys are HMAC digests
(keyed with the server secret): no username or address is stored. When a
row is added, rows a lockout time past their last attempt are deleted, and
every TRIM_EVERY-th new row the table is cut to STEPSTREAM_LOGIN_THROTTLE_ROWS
(the oldest go first): what an attacker spraying names and addresses can make
it hold is bounded.

The client address is the connection's peer (REMOTE_ADDR) as uvicorn gives it:
uvicorn replaces it by the `X-Forwarded-For` address only for connections from
its FORWARDED_ALLOW_IPS (default 127.0.0.1 and ::1, a proxy on the same
machine). IPv6 addresses count per /64 network (one host usually holds a whole
/64), IPv4-mapped IPv6 addresses as their IPv4 address.
"""

import ipaddress
import logging
import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from django.utils.crypto import salted_hmac

from stepstream.models import LoginThrottle

logger = logging.getLogger("stepstream.dashboard")

CONTRACT_MAX_FAILURES = 20  # docs: "after at most 20 failures in a row"
# the table is trimmed to STEPSTREAM_LOGIN_THROTTLE_ROWS when a new row's id is a multiple
# of this: it may hold this many more rows in between (at the cap a trim reads the whole
# index: about 5 ms on SQLite, 30 ms on PostgreSQL for 100,000 rows)
TRIM_EVERY = 100
_SALT = "stepstream.dashboard.login-throttle"


def now() -> datetime:
    """The clock of every decision here (tests replace it)."""
    return timezone.now()


@dataclass(frozen=True)
class Attempt:
    """One sign-in POST: its two keys, and `retry_after` seconds when it is refused."""

    keys: tuple[str, ...]
    retry_after: int | None = None
    reached_limit: bool = False  # this attempt was the last one allowed for a key

    @property
    def refused(self) -> bool:
        return self.retry_after is not None


def client_address(request) -> str:
    """The address counted for a request: its peer, an IPv6 one as its /64 network."""
    raw = (request.META.get("REMOTE_ADDR") or "").split("%", 1)[0]  # no IPv6 zone
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return "unknown"  # no peer address (a Unix socket): all such count together
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def normalize_username(username: str) -> str:
    """As Django's sign-in form reads it (stripped, NFKC): one count for all its spellings."""
    return unicodedata.normalize("NFKC", username.strip())


def keys_for(request, username: str) -> tuple[str, str]:
    return (
        _digest("u", normalize_username(username)),
        _digest("a", client_address(request)),
    )


def _digest(kind: str, value: str) -> str:
    return f"{kind}:" + salted_hmac(_SALT, value, algorithm="sha256").hexdigest()


def _limits() -> tuple[int, timedelta, int]:
    limits = settings.STEPSTREAM
    max_failures = max(1, min(limits["LOGIN_MAX_FAILURES"], CONTRACT_MAX_FAILURES))
    return (
        max_failures,
        timedelta(seconds=limits["LOGIN_LOCKOUT_SECONDS"]),
        limits["LOGIN_THROTTLE_ROWS"],
    )


def locked(request, username: str) -> Attempt | None:
    """A refusal when the username or the address is locked out (one read, nothing written)."""
    keys = keys_for(request, username)
    t = now()
    retry_after = _retry_after(_rows(keys, locked_after=t), t, 0)
    return None if retry_after is None else Attempt(keys, retry_after)


def count(request, username: str) -> Attempt:
    """Counts an attempt under both keys before its password is checked.

    Refused (`retry_after` set) when a key is locked out already, or when,
    counted, a key is past the limit: another attempt, concurrent with this
    one, was the last allowed.
    """
    keys = keys_for(request, username)
    max_failures, lockout, rows = _limits()
    t = now()
    retry_after = _retry_after(_rows(keys, locked_after=t), t, 0)
    if retry_after is not None:
        return Attempt(keys, retry_after)
    new_ids = [new_id for key in keys if (new_id := _count_one(key, t, max_failures, lockout))]
    if new_ids:
        _prune(t, lockout, rows, trim=any(i % TRIM_EVERY == 0 for i in new_ids))
    counted = _rows(keys)
    retry_after = _retry_after(counted, t, max_failures + 1)
    reached = retry_after is None and any(n >= max_failures for n, _ in counted)
    return Attempt(keys, retry_after, reached_limit=reached)


def succeeded(attempt: Attempt) -> None:
    """A correct password: the username's and the address's counts start again."""
    LoginThrottle.objects.filter(key__in=attempt.keys).delete()


def failed(attempt: Attempt, request) -> None:
    """A refused password (already counted): says so in the log when it locks a key."""
    if attempt.reached_limit:
        _, lockout, _ = _limits()
        logger.warning(
            "dashboard sign-in: the username or the address %s reached the limit of "
            "failures in a row; further attempts are refused for %d s",
            client_address(request),
            lockout.total_seconds(),
        )


def wait_in_words(seconds: int) -> str:
    if seconds < 60:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


# -- the rows


def _rows(keys, locked_after: datetime | None = None) -> list[tuple[int, datetime | None]]:
    """(failures, locked_until) of the keys' rows; only those locked after a time if given."""
    rows = LoginThrottle.objects.filter(key__in=keys)
    if locked_after is not None:
        rows = rows.filter(locked_until__gt=locked_after)
    return list(rows.values_list("failures", "locked_until"))


def _retry_after(rows, t: datetime, failures_at_least: int) -> int | None:
    """Seconds until the last lock among `rows` (with that many failures) ends, or None."""
    ends = [
        locked_until
        for failures, locked_until in rows
        if failures >= failures_at_least and locked_until is not None and locked_until > t
    ]
    if not ends:
        return None
    return max(1, math.ceil((max(ends) - t).total_seconds()))


def _count_one(key: str, t: datetime, max_failures: int, lockout: timedelta) -> int | None:
    """Counts one attempt for a key; the id of its row when the row is new."""
    lock_until = t + lockout
    first_locks = lock_until if max_failures == 1 else None
    # a count starts again after a lockout ended or a lockout time without attempts
    starts_again = Q(last_at__lt=t - lockout) | Q(locked_until__lte=t)
    when = models.DateTimeField(null=True)
    # both CASEs read the row as it was (SQLite and PostgreSQL evaluate SET so)
    update = {
        "failures": Case(When(starts_again, then=Value(1)), default=F("failures") + 1),
        "locked_until": Case(
            When(starts_again, then=Value(first_locks, output_field=when)),
            When(failures__gte=max_failures - 1, then=Value(lock_until, output_field=when)),
            default=Value(None, output_field=when),
            output_field=when,
        ),
        "last_at": Value(t, output_field=models.DateTimeField()),
    }
    if LoginThrottle.objects.filter(key=key).update(**update):
        return None
    try:
        with transaction.atomic():
            row = LoginThrottle.objects.create(
                key=key, failures=1, last_at=t, locked_until=first_locks
            )
    except IntegrityError:  # a concurrent attempt made the row first
        LoginThrottle.objects.filter(key=key).update(**update)
        return None
    return row.id


def _prune(t: datetime, lockout: timedelta, rows: int, trim: bool) -> None:
    """Spent rows go; when `trim`, so do the oldest beyond `rows`: the table stays bounded."""
    # a lock ends at most one lockout after its row's last attempt: these are spent
    LoginThrottle.objects.filter(last_at__lt=t - lockout).delete()
    if not trim:  # finding the rows-th newest row reads up to `rows` index entries
        return
    newest_first = LoginThrottle.objects.order_by("-last_at", "-id")
    beyond = list(newest_first.values_list("last_at", "id")[rows : rows + 1])
    if beyond:
        last_at, row_id = beyond[0]
        LoginThrottle.objects.filter(
            Q(last_at__lt=last_at) | Q(last_at=last_at, id__lte=row_id)
        ).delete()
