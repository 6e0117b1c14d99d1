"""The `stepstream` command line: serve, init-project, manage."""

import argparse
import errno
import json
import os
import socket
import sys

from stepstream import config


def _fail(message: str) -> int:
    print(f"stepstream: {message}", file=sys.stderr)
    return 2


def _check_data_dir() -> str | None:
    directory = config.data_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        return (
            f"cannot write to the data directory {directory} ({e.strerror}); "
            "set STEPSTREAM_DATA_DIR to a writable directory."
        )
    return None


def _database_label() -> str:
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"SQLite file {s['NAME']}"
    return f"PostgreSQL at {s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"


def _setup() -> str | None:
    """Starts Django and brings the database up to date; an error message or None."""
    if config.database_url() is None or not os.environ.get("STEPSTREAM_SECRET_KEY"):
        problem = _check_data_dir()
        if problem:
            return problem
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    try:
        import django

        django.setup()
    except ValueError as e:
        return str(e)
    from django.db import OperationalError, connection

    try:
        connection.ensure_connection()
    except OperationalError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else "no answer"
        return f"cannot reach the database ({_database_label()}): {first_line}"
    _migrate()
    return None


def _migrate() -> None:
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(724031)")
            try:
                call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(724031)")
    else:
        call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)


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
    problem = _setup()
    if problem:
        return _fail(problem)
    problem = _port_problem(args.host, args.port)
    if problem:
        return _fail(problem)
    base = f"http://{args.host}:{args.port}"
    if args.demo:
        from stepstream.demo import ensure_demo

        print(ensure_demo(base), file=sys.stderr, flush=True)
        os.environ["STEPSTREAM_DEMO"] = "1"  # the /demo page is served only now
    import uvicorn
    from django.conf import settings

    from stepstream.asgi import application

    limits = settings.STEPSTREAM
    print(
        f"stepstream: serving {base} (API {base}/api/v1, WebSocket "
        f"ws://{args.host}:{args.port}/ws) on {_database_label()}",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            host=args.host,
            port=args.port,
            lifespan="on",
            interface="asgi3",
            log_config=None,
            access_log=False,
            ws="stepstream.ws.transport:BoundedWebSocketProtocol",  # memory bounded per socket
            ws_max_size=16 * 1024 * 1024,
            ws_per_message_deflate=limits["WS_COMPRESSION"],
            ws_ping_interval=limits["WS_PING_INTERVAL"],
            ws_ping_timeout=limits["WS_PING_TIMEOUT"],
            timeout_graceful_shutdown=5,
        )
    )
    server.run()
    return 0


def cmd_init_project(args) -> int:
    if not args.name.strip():
        return _fail("the project name must not be empty.")
    problem = _setup()
    if problem:
        return _fail(problem)
    from stepstream.tenants import create_project

    print(json.dumps(create_project(args.name)), flush=True)
    return 0


def cmd_manage(args) -> int:
    problem = _setup()
    if problem:
        return _fail(problem)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["stepstream manage", *args.rest])
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve HTTP and WebSocket")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true", help="create and show a demo project")
    serve.set_defaults(func=cmd_serve)
    init = sub.add_parser("init-project", help="create a project; prints its keys as JSON")
    init.add_argument("name")
    init.set_defaults(func=cmd_init_project)
    manage = sub.add_parser("manage", help="run a Django management command")
    manage.add_argument("rest", nargs=argparse.REMAINDER)
    manage.set_defaults(func=cmd_manage)
    from stepstream.cli_keys import add_parser as add_keys_parser

    add_keys_parser(sub)
    from stepstream.watch import add_subcommand as add_watch

    add_watch(sub)  # `stepstream watch`: a person's flows live in the terminal (watch.py)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
