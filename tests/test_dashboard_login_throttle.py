"""The dashboard's sign-in is throttled per username and per client address.

After 20 failures in a row (STEPSTREAM_LOGIN_MAX_FAILURES, at most 20) for a
username or from an address, further attempts get 429 with Retry-After for
the lockout time, and the password hasher is never run for them. A success
resets both counts; the lockout ends on its own. The clock is the module's
`now`, replaced here, so nothing sleeps.
"""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, RequestFactory

from stepstream import config
from stepstream.http.dashboard import throttle, views
from stepstream.models import LoginThrottle

PASSWORD = "correct horse battery staple"
LOGIN = "/dashboard/login/"


class CountingHasher(MD5PasswordHasher):
    """A fast hasher that counts how often a password is hashed (checks hash too)."""

    calls = 0

    def encode(self, password, salt):
        CountingHasher.calls += 1
        return super().encode(password, salt)


class Clock:
    def __init__(self):
        self.t = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self):
        return self.t

    def advance(self, seconds: float):
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(throttle, "now", c)
    return c


@pytest.fixture
def limits(settings):
    settings.PASSWORD_HASHERS = ["tests.test_dashboard_login_throttle.CountingHasher"]
    settings.STEPSTREAM = {
        **settings.STEPSTREAM,
        "LOGIN_MAX_FAILURES": 20,
        "LOGIN_LOCKOUT_SECONDS": 900,
        "LOGIN_THROTTLE_ROWS": 100_000,
    }
    return settings


@pytest.fixture
def ada(db, limits, clock):
    user = User.objects.create_user("ada", "ada@example.com", PASSWORD, is_staff=True)
    CountingHasher.calls = 0
    return user


class Browser:
    """A client with CSRF checks on, signing in from one address."""

    def __init__(self, address: str):
        self.address = address
        self.client = Client(enforce_csrf_checks=True, REMOTE_ADDR=address)
        self.token = self.client.get(LOGIN).cookies["csrftoken"].value

    def sign_in(self, username: str, password: str):
        return self.client.post(
            LOGIN,
            {"username": username, "password": password, "csrfmiddlewaretoken": self.token},
        )

    def signed_in(self) -> bool:
        return self.client.get("/dashboard/").status_code == 200


def refused(response, clock_seconds_left: int | None = None) -> bool:
    if response.status_code != 429:
        return False
    assert "Too many failed sign-ins" in response.content.decode()
    assert response["Content-Security-Policy"]
    if clock_seconds_left is not None:
        assert response["Retry-After"] == str(clock_seconds_left)
    return True


def fail(browser: Browser, username: str, times: int, clock: Clock):
    for _ in range(times):
        answer = browser.sign_in(username, "wrong")
        assert answer.status_code == 200, answer.status_code
        assert "do not match a staff account" in answer.content.decode()
        clock.advance(1)


def test_twenty_wrong_passwords_then_the_right_one_is_refused_unchecked(ada, clock):
    browser = Browser("203.0.113.7")
    fail(browser, "ada", 20, clock)
    assert CountingHasher.calls == 20  # each failure was checked

    answer = browser.sign_in("ada", PASSWORD)
    assert refused(answer, clock_seconds_left=900 - 1)  # locked at the 20th, 1 s ago
    assert "try again in 15 minutes" in answer.content.decode()
    assert CountingHasher.calls == 20  # the password was never hashed
    assert not browser.signed_in()

    # the username is locked from any address, not only the guesser's
    elsewhere = Browser("198.51.100.9")
    assert refused(elsewhere.sign_in("ada", PASSWORD))
    assert CountingHasher.calls == 20
    assert not elsewhere.signed_in()


def test_another_username_from_the_address_is_locked_when_the_address_reaches_the_limit(ada, clock):
    guesser = Browser("203.0.113.7")
    for i in range(20):  # a different (unknown) username each time: the address counts
        fail(guesser, f"user{i}", 1, clock)
    assert CountingHasher.calls == 20  # Django hashes for unknown users too

    assert refused(guesser.sign_in("ada", PASSWORD))
    assert refused(guesser.sign_in("someone-new", "x"))
    assert CountingHasher.calls == 20

    # ada from her own address is not locked: her username has no failures
    own = Browser("198.51.100.9")
    answer = own.sign_in("ada", PASSWORD)
    assert answer.status_code == 302 and own.signed_in()


def test_a_success_before_the_limit_resets_the_username_and_the_address(ada, clock):
    browser = Browser("203.0.113.7")
    fail(browser, "ada", 10, clock)
    fail(browser, "nobody", 9, clock)  # the address is at 19
    assert browser.sign_in("ada", PASSWORD).status_code == 302

    # both counts start again: 20 more failures are all checked, the 21st is refused
    browser = Browser("203.0.113.7")
    fail(browser, "ada", 20, clock)
    assert refused(browser.sign_in("ada", PASSWORD))
    assert CountingHasher.calls == 10 + 9 + 1 + 20  # the refused one was not hashed


def test_sign_in_works_again_once_the_lockout_time_has_passed(ada, clock, limits):
    limits.STEPSTREAM = {**limits.STEPSTREAM, "LOGIN_LOCKOUT_SECONDS": 60}
    browser = Browser("203.0.113.7")
    fail(browser, "ada", 19, clock)
    browser.sign_in("ada", "wrong")  # the 20th locks, at this instant
    assert refused(browser.sign_in("ada", PASSWORD), clock_seconds_left=60)
    assert "try again in 1 minute" in browser.sign_in("ada", PASSWORD).content.decode()

    clock.advance(59.5)
    answer = browser.sign_in("ada", PASSWORD)
    assert refused(answer, clock_seconds_left=1)
    assert "try again in 1 second" in answer.content.decode()

    clock.advance(0.5)  # the lockout's end
    answer = browser.sign_in("ada", PASSWORD)
    assert answer.status_code == 302 and browser.signed_in()
    assert LoginThrottle.objects.count() == 0  # the success removed both counts


def test_after_a_lockout_the_count_starts_again(ada, clock, limits):
    limits.STEPSTREAM = {**limits.STEPSTREAM, "LOGIN_MAX_FAILURES": 3}
    browser = Browser("203.0.113.7")
    fail(browser, "ada", 3, clock)
    assert refused(browser.sign_in("ada", PASSWORD))
    clock.advance(900)
    fail(browser, "ada", 3, clock)  # three more checked, not one
    assert refused(browser.sign_in("ada", PASSWORD))
    assert CountingHasher.calls == 6


def test_failures_far_apart_are_not_in_a_row(ada, clock, limits):
    limits.STEPSTREAM = {**limits.STEPSTREAM, "LOGIN_MAX_FAILURES": 3}
    browser = Browser("203.0.113.7")
    for _ in range(6):  # one failure per lockout time: never three in a row
        fail(browser, "ada", 1, clock)
        clock.advance(901)
    assert browser.sign_in("ada", PASSWORD).status_code == 302


def test_a_busy_server_answers_503_without_checking_or_counting(ada, clock):
    browser = Browser("203.0.113.7")
    for _ in range(views.PASSWORD_CHECKS_AT_ONCE):
        assert views._password_checks.acquire(blocking=False)
    try:
        answer = browser.sign_in("ada", PASSWORD)
        assert answer.status_code == 503 and answer["Retry-After"] == "1"
        assert "busy" in answer.content.decode()
    finally:
        for _ in range(views.PASSWORD_CHECKS_AT_ONCE):
            views._password_checks.release()
    assert CountingHasher.calls == 0 and LoginThrottle.objects.count() == 0
    assert browser.sign_in("ada", PASSWORD).status_code == 302


def test_no_username_or_address_is_stored_in_the_clear(ada, clock):
    Browser("203.0.113.7").sign_in("ada", "wrong")
    keys = list(LoginThrottle.objects.values_list("key", flat=True))
    assert len(keys) == 2 and sorted(k[:2] for k in keys) == ["a:", "u:"]
    assert not any("ada" in k or "203.0.113.7" in k for k in keys)


def test_addresses_and_usernames_as_counted():
    def address(remote):
        request = RequestFactory().post(LOGIN, REMOTE_ADDR=remote)
        return throttle.client_address(request)

    assert address("203.0.113.7") == "203.0.113.7"
    assert address("::ffff:203.0.113.7") == "203.0.113.7"
    # one host usually holds a whole /64: its addresses count together
    assert address("2001:db8:0:1::1") == address("2001:db8:0:1:ffff::2") == "2001:db8:0:1::/64"
    assert address("2001:db8:0:2::1") != address("2001:db8:0:1::1")
    assert address("fe80::1%eth0") == "fe80::/64"
    assert address("") == address("not an address") == "unknown"

    assert throttle.normalize_username(" ａｄａ ") == "ada"  # NFKC, as Django's form reads it


def test_the_limit_cannot_be_set_above_twenty(monkeypatch):
    monkeypatch.setenv("STEPSTREAM_LOGIN_MAX_FAILURES", "21")
    with pytest.raises(ValueError, match="from 1 to 20"):
        config.int_setting("STEPSTREAM_LOGIN_MAX_FAILURES", 20, maximum=20)
    monkeypatch.setenv("STEPSTREAM_LOGIN_MAX_FAILURES", "5")
    assert config.int_setting("STEPSTREAM_LOGIN_MAX_FAILURES", 20, maximum=20) == 5


@pytest.mark.parametrize("trim_every", [1, throttle.TRIM_EVERY])
@pytest.mark.slow
def test_rows_are_bounded_by_the_lockout_time_and_the_cap(
    db, limits, clock, monkeypatch, trim_every
):
    monkeypatch.setattr(throttle, "TRIM_EVERY", trim_every)
    limits.STEPSTREAM = {**limits.STEPSTREAM, "LOGIN_THROTTLE_ROWS": 100}
    factory = RequestFactory()
    for i in range(400):  # a spray of new usernames from new addresses: two rows each
        request = factory.post(LOGIN, REMOTE_ADDR=f"10.0.{i // 250}.{i % 250}")
        assert not throttle.count(request, f"user{i}").refused
        assert LoginThrottle.objects.count() <= 100 + trim_every
    # the newest are kept, the oldest went
    newest = throttle.keys_for(request, "user399")
    assert LoginThrottle.objects.filter(key__in=newest).count() == 2
    oldest = throttle.keys_for(factory.post(LOGIN, REMOTE_ADDR="10.0.0.0"), "user0")
    assert not LoginThrottle.objects.filter(key__in=oldest).exists()

    clock.advance(901)  # a lockout time later, the next new row clears every spent one
    throttle.count(factory.post(LOGIN, REMOTE_ADDR="10.9.9.9"), "late")
    assert LoginThrottle.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_attempts_check_no_more_passwords_than_the_limit(limits, clock):
    """Sixteen attempts at once, two short of the limit: two are let through, whatever the
    interleaving (each is counted before its password would be checked)."""
    factory = RequestFactory()
    for _ in range(18):
        assert not throttle.count(factory.post(LOGIN, REMOTE_ADDR="203.0.113.7"), "ada").refused

    start = threading.Barrier(16)
    allowed = []

    def attempt(i):
        try:
            start.wait()
            request = factory.post(LOGIN, REMOTE_ADDR=f"198.51.100.{i}")  # the username counts
            allowed.append(not throttle.count(request, "ada").refused)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 16
    assert sum(allowed) <= 2
    assert throttle.locked(factory.post(LOGIN), "ada") is not None
