"""Another tenant's REST latency while clients guess dashboard passwords (issue 24).

    python -m bench.signin_guessing [--mode one|spray] [--clients 16] [--seconds 8]

Starts one `stepstream serve` (a fresh SQLite data directory; DATABASE_URL for
PostgreSQL), a project and a staff user, then times a tenant's `GET /flows`
every 20 ms: 3 s alone, then while CLIENTS threads post wrong passwords to
/dashboard/login/ as fast as they are answered.

* `one`: every guess for one username from one address (a single attacker):
  after 20 failures the username and the address are locked (429).
* `spray`: a new username from a new address each time (given in
  `X-Forwarded-For`, which the server reads from loopback peers, as uvicorn's
  FORWARDED_ALLOW_IPS has it): no key reaches the limit, so only the cap on
  password checks at once (stepstream/http/dashboard/views.py) bounds the cost.

Prints one line: the victim's p50/p99 alone and during the guessing, and how
many sign-in answers of each status the guessers got (docs/security.md,
"Dashboard sign-in").
"""

import argparse
import re
import tempfile
import threading
import time

import httpx

from stepstream.testing.servers import Server


def _quantile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def _victim(rest: httpx.Client, seconds: float) -> list[float]:
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        assert rest.get("/flows").status_code == 200
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    return sorted(times)


def _guesser(url: str, mode: str, n: int, stop: threading.Event, statuses: dict, lock) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        form = client.get("/dashboard/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        i = 0
        while not stop.is_set():
            i += 1
            if mode == "spray":
                username, address = f"user{n}-{i}", f"10.{n}.{i // 250 % 250}.{i % 250}"
            else:
                username, address = "admin", "203.0.113.7"
            answer = client.post(
                "/dashboard/login/",
                data={"username": username, "password": f"guess{i}", "csrfmiddlewaretoken": token},
                headers={"X-Forwarded-For": address},
            )
            with lock:
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["one", "spray"], default="one")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    server = Server(tempfile.mkdtemp(prefix="signin-"), STEPSTREAM_LOG_LEVEL="warning").start()
    try:
        keys = server.init_project()["environments"][0]
        server.shell(
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('admin', 'admin@example.com', 'a long password', "
            "is_staff=True)"
        )
        rest = httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {keys['secret_key']}"},
            timeout=30,
        )
        rest.get("/flows")
        alone = _victim(rest, 3.0)

        stop, lock, statuses = threading.Event(), threading.Lock(), {}
        guessers = [
            threading.Thread(target=_guesser, args=(server.url, args.mode, n, stop, statuses, lock))
            for n in range(args.clients)
        ]
        for guesser in guessers:
            guesser.start()
        time.sleep(0.5)
        during = _victim(rest, args.seconds)
        stop.set()
        for guesser in guessers:
            guesser.join()
        print(
            f"{args.mode}, {args.clients} clients: GET /flows alone "
            f"p50 {_quantile(alone, 0.5):.1f} p99 {_quantile(alone, 0.99):.1f} ms; "
            f"guessing p50 {_quantile(during, 0.5):.1f} p99 {_quantile(during, 0.99):.1f} "
            f"max {during[-1]:.0f} ms; sign-in answers {dict(sorted(statuses.items()))}"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
