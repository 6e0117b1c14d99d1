"""`stepstream watch`: one person's flows and steps as a live table in the terminal.

    stepstream watch --key pk_... --person demo-user   # a server at http://127.0.0.1:8000
    stepstream-watch --url https://stepstream.example.com --key pk_... --person demo-user

The same command in the server's command line and on its own, for the client
distribution alone (`pip install "./clients/python[watch]"`; the table is
drawn with `rich`, its one extra dependency).

Uses the Python client (stepstream_client) with the publishable key, like a
browser would: a snapshot, then both subscriptions; it reconnects by itself
when the server goes away. The table redraws as events arrive and each event
is printed as a line above it. Ctrl-C stops it (exit code 0). It never
creates the person: an unknown person is an error (exit code 2), as is a
refused key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import signal
import sys

STATE_STYLES = {
    "active": "bold cyan",
    "completed": "green",
    "inactive": "dim",
    "exited": "red",
}
STATUS_STYLES = {"live": "green", "connecting": "yellow", "reconnecting": "yellow", "closed": "red"}


HELP = "show a person's flows and steps live in the terminal"
DEFAULT_URL = "http://127.0.0.1:8000"  # where `stepstream serve` listens by default
DESCRIPTION = "Shows one person's flows and steps as a live table; Ctrl-C stops."


def add_subcommand(subparsers) -> None:
    """Registers `watch` on the `stepstream` command line."""
    add_arguments(subparsers.add_parser("watch", help=HELP, description=DESCRIPTION))


def main(argv: list[str] | None = None) -> int:
    """`stepstream-watch`: the same command, for the client distribution alone."""
    p = argparse.ArgumentParser(prog="stepstream-watch", description=DESCRIPTION)
    add_arguments(p)
    args = p.parse_args(argv)
    return args.func(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="the server's base URL (default: %(default)s, where `stepstream serve` listens)",
    )
    p.add_argument("--key", required=True, help="the environment's publishable key (pk_...)")
    p.add_argument("--person", required=True, help="the person's person_key")
    p.add_argument("--person-token", help="the person's token, when identity verification is on")
    p.add_argument(
        "--history", action="store_true", help="print the person's recorded changes first"
    )
    p.add_argument("--origin", help="the Origin header to send, if the key has an allow-list")
    p.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("rich") is None:  # the client alone was installed without it
        print(
            "stepstream watch draws its table with rich, which is not installed here: "
            'pip install rich (or the client with it: pip install "./clients/python[watch]")',
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(watch(args))
    except KeyboardInterrupt:  # Ctrl-C before the handler was in place
        return 0


def event_line(change: dict):
    from rich.text import Text

    when = change.get("occurred_at", "")[11:19]
    name = change["flow"]
    if change["entity"] == "step":
        name += "/" + change["identifier"]
    line = Text()
    line.append(f"{when} ", style="dim")
    line.append(f"#{change['seq']:<4} ", style="bold")
    line.append(f"{change['entity']:<4} {name}  ")
    line.append(change["previous_state"], style=STATE_STYLES.get(change["previous_state"], ""))
    line.append(" → ")
    line.append(change["state"], style=STATE_STYLES.get(change["state"], ""))
    return line


class InSeqOrder:
    """Passes events on in `seq` order, from `first` on.

    The flow and step subscriptions are two streams, so with --history one
    backlog can arrive whole before the other (#1, #8, then #2 to #7). An event
    ahead of the next `seq` waits for the ones before it, at most `hold`
    seconds: a gap that does not fill (a log that restarted) only delays it.
    """

    def __init__(self, emit, first: int, hold: float = 0.5):
        self._emit, self._next, self._hold = emit, first, hold
        self._held: dict[int, dict] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, change: dict) -> None:
        seq = change["seq"]
        if seq < self._next:
            self._emit(change)
            return
        self._held[seq] = change
        while self._next in self._held:
            self._emit(self._held.pop(self._next))
            self._next += 1
        if self._held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._hold, self.flush)

    def flush(self) -> None:
        """Everything held, in order (the gap before it is given up on)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for seq in sorted(self._held):
            self._emit(self._held.pop(seq))
            self._next = seq + 1


def render(client):
    """The person's flows and steps as a table."""
    from rich.table import Table
    from rich.text import Text

    title = Text.assemble(
        (client.person_key, "bold"),
        "  ",
        (client.status, STATUS_STYLES.get(client.status, "")),
    )
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("flow")
    table.add_column("v", justify="right")
    table.add_column("flow state")
    table.add_column("step")
    table.add_column("step state")
    for flow in client.flows.values():
        flow_state = Text(flow.state, style=STATE_STYLES.get(flow.state, ""))
        for i, step in enumerate(flow.steps):
            first = i == 0
            table.add_row(
                flow.flow if first else "",
                str(flow.version) if first else "",
                flow_state if first else "",
                step.identifier,
                Text(step.state, style=STATE_STYLES.get(step.state, "")),
                end_section=i == len(flow.steps) - 1,
            )
    if not client.flows:
        table.caption = "no flows yet" if client.status == "live" else "waiting for the server…"
    else:
        table.caption = f"resume points: flow #{client.seq['flow']}, step #{client.seq['step']}"
    return table


async def watch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from stepstream_client.client import Client

    # the status is in the table; the client's own log lines would only garble it
    logging.getLogger("stepstream.client").setLevel(logging.CRITICAL)
    console = Console()
    err = Console(stderr=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    client = Client(
        args.url,
        args.key,
        args.person,
        person_token=args.person_token,
        identify=False,  # watching never creates anyone
        replay_from=0 if args.history else None,
        origin=args.origin,
    )
    console.print(f"watching [bold]{args.person}[/] at {args.url}  (Ctrl-C to stop)")
    with Live(render(client), console=console, auto_refresh=False) as live:

        def redraw(*_):
            live.update(render(client), refresh=True)

        def print_event(change):
            live.console.print(event_line(change))

        history = InSeqOrder(print_event, first=1) if args.history else None
        client.on_event(history.add if history else print_event)
        client.on_change(redraw)
        client.on_status(redraw)
        await client.start(wait=False)
        closed = asyncio.create_task(client.wait_for(lambda c: c.status == "closed", None))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (closed, stopped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await client.close()
        if history:
            history.flush()
        redraw()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    if client.error is not None and not stop.is_set():
        err.print(f"stepstream: {client.error}", markup=False, highlight=False)
        return 2
    return 0
