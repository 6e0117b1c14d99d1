"""The `stepstream` command line: serve, init-project, keys, watch, manage."""

import argparse
import errno
import json
import logging
import os
import socket
import sys

from stepstream import __version__, config
from stepstream.cli.server import build_server
from stepstream.cli.setup import database_label, fail, redis_problem, setup


def _port_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use; choose another with --port."
            return f"cannot listen on {host}:{port}: {e.strerror}"
    return None


def cmd_serve(args) -> int:
    # what is quick to check first: a wrong REDIS_URL or a busy port fails in a moment,
    # before Django starts and a new database is made and migrated
    problem = redis_problem() or _port_problem(args.host, args.port) or setup()
    if problem:
        return fail(problem)
    base = f"http://{args.host}:{args.port}"
    if args.demo:
        from stepstream.http.demo import ensure_demo

        print(ensure_demo(base), file=sys.stderr, flush=True)
        os.environ["STEPSTREAM_DEMO"] = "1"  # the /demo page is served only now
    log = logging.getLogger("stepstream")  # so STEPSTREAM_LOG_FORMAT=json makes it JSON
    for sentence in config.deprecated_names():  # renamed settings, the old name still read
        log.warning(sentence)
    if args.workers > 1:
        from django.db import connections

        from stepstream.cli.workers import supervise

        try:
            build_server(args.host, args.port)  # checked once here, not N times at start
        except RuntimeError as exc:
            return fail(str(exc))
        connections.close_all()  # the parent only supervises (and relays): no database
        log.info(
            "serving %s (API %s/api/v1, WebSocket ws://%s:%s/ws) on %s with %d workers",
            base,
            base,
            args.host,
            args.port,
            database_label(),
            args.workers,
        )
        return supervise(args.host, args.port, args.workers)
    try:
        server = build_server(args.host, args.port)
    except RuntimeError as exc:
        return fail(str(exc))
    log.info(
        "serving %s (API %s/api/v1, WebSocket ws://%s:%s/ws) on %s",
        base,
        base,
        args.host,
        args.port,
        database_label(),
    )
    server.run()
    return 0


def cmd_init_project(args) -> int:
    if not args.name.strip():
        return fail("the project name must not be empty.")
    problem = setup()
    if problem:
        return fail(problem)
    from stepstream.trust.tenants import create_project

    created = create_project(args.name)
    print(
        f"stepstream: created project {args.name!r} (id {created['project_id']}) "
        f"in {database_label()}",
        file=sys.stderr,
    )
    print(json.dumps(created), flush=True)
    return 0


def cmd_reset_demo(args) -> int:
    problem = setup()
    if problem:
        return fail(problem)
    from stepstream.errors import StepstreamError
    from stepstream.http import demo

    try:
        print(f"stepstream: {demo.reset()}", file=sys.stderr)
    except StepstreamError as e:
        return fail(" ".join(e.messages))
    return 0


def cmd_manage(args) -> int:
    problem = setup()
    if problem:
        return fail(problem)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["stepstream manage", *args.rest])
    return 0


SERVE_HELP = """Serves the REST API (/api/v1), the WebSocket endpoint (/ws), the admin and
the demo from one process, creating or migrating its database first.

The database is the SQLite file in STEPSTREAM_DATA_DIR (default ./.stepstream),
or DATABASE_URL (postgres://...) with REDIS_URL (redis://...) between several
serve processes. --workers N starts N processes on the one port (one per core
is the usual choice); changes cross them through Redis when REDIS_URL is set,
else through this parent process, which supervises them (docs/deploy.md).
Every other setting comes from the environment: see the README's
Configuration table."""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, not {port}")
    return port


def max_workers() -> int:
    """More processes than twice the cores only adds memory and lock contention."""
    return max(8, 2 * (os.cpu_count() or 1))


def _workers(text: str) -> int:
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    limit = max_workers()
    if not 1 <= workers <= limit:
        raise argparse.ArgumentTypeError(
            f"must be between 1 and {limit} (at most twice this machine's cores, at least 8), "
            f"not {workers}"
        )
    return workers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stepstream",
        description="Stepstream: flows and steps per person, with live state over WebSocket.",
        epilog="Run `stepstream COMMAND --help` for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"stepstream {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve HTTP and WebSocket",
        description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=_port, default=8000, help="port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="server processes sharing the port and the database, e.g. one per core "
        "(default: %(default)s; docs/deploy.md)",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also create (once) a demo project, flow and person and serve the page /demo",
    )
    serve.set_defaults(func=cmd_serve)
    init = sub.add_parser(
        "init-project",
        help="create a project; prints its keys as JSON",
        description="Creates a project with its development and production environments and "
        "prints its keys as one JSON object on stdout (shown only now). It uses the database "
        "a server started from the same directory with the same environment would use; "
        "stderr says which.",
    )
    init.add_argument("name", help="the project's name")
    init.set_defaults(func=cmd_init_project)
    reset_demo = sub.add_parser(
        "reset-demo",
        help="start the demo over (its person's flows and log are deleted)",
        description="Deletes the demo person made by `serve --demo`, with their flows and "
        "log, and makes them again with the onboarding flow started. A running server's "
        "demo page has a Start over button that does the same.",
    )
    reset_demo.set_defaults(func=cmd_reset_demo)
    manage = sub.add_parser(
        "manage",
        help="run a Django management command (e.g. createsuperuser)",
        description="Runs a Django management command against Stepstream's database, "
        "e.g. `stepstream manage createsuperuser`.",
    )
    manage.add_argument("rest", nargs=argparse.REMAINDER)
    manage.set_defaults(func=cmd_manage)
    from stepstream.cli.keys import add_parser as add_keys_parser

    add_keys_parser(sub)
    from stepstream_client.watch import add_subcommand as add_watch

    # `stepstream watch`: a person's flows live in the terminal, the client package's
    # `stepstream-watch` (clients/python/stepstream_client/watch.py)
    add_watch(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130  # Ctrl-C before the server took over its own signals: no traceback


if __name__ == "__main__":
    sys.exit(main())
