"""`stepstream watch`: one person's flows and steps as a live table in the terminal.

    stepstream watch --key pk_... --person demo-user   # a server at http://127.0.0.1:8000
    stepstream-watch --url https://stepstream.example.com --key pk_... --person demo-user

The same command in the server's command line and on its own, for the client
distribution alone (`pip install ./clients/python`): the table is drawn with
plain ANSI sequences (`Screen`), no dependency beyond the client's. Colours
only on a terminal, and not with NO_COLOR set; not on a terminal (a pipe, a
file), each table is printed whole when it changes.

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
import logging
import os
import shutil
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stepstream_client.state import StateChange

STATE_STYLES = {
    "active": "bold cyan",
    "completed": "green",
    "inactive": "dim",
    "exited": "red",
}
STATUS_STYLES = {"live": "green", "connecting": "yellow", "reconnecting": "yellow", "closed": "red"}
SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

# A line is a list of (text, style) segments; a style is words of SGR, "" for none.
Segment = tuple[str, str]
Line = list[Segment]


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
    try:
        return asyncio.run(watch(args))
    except KeyboardInterrupt:  # Ctrl-C before the handler was in place
        return 0


def event_line(change: dict):
    when = change.get("occurred_at", "")[11:19]
    name = change["flow"]
    if change["entity"] == "step":
        name += "/" + change["identifier"]
    return [
        (f"{when} ", "dim"),
        (f"#{change['seq']:<4} ", "bold"),
        (f"{change['entity']:<4} {name}  ", ""),
        (change["previous_state"], STATE_STYLES.get(change["previous_state"], "")),
        (" → ", ""),
        (change["state"], STATE_STYLES.get(change["state"], "")),
    ]


class InSeqOrder:
    """Passes events on in `seq` order, from `first` on.

    The flow and step subscriptions are two streams, so with --history one
    backlog can arrive whole before the other (#1, #8, then #2 to #7). An event
    ahead of the next `seq` waits for the ones before it, at most `hold`
    seconds: a gap that does not fill (a log that restarted) only delays it.
    """

    def __init__(self, emit, first: int, hold: float = 0.5):
        self._emit, self._next, self._hold = emit, first, hold
        self._held: dict[int, StateChange] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, change: StateChange) -> None:
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


COLUMNS = ("flow", "v", "flow state", "step", "step state")


def render(client) -> list[Line]:
    """The person's flows and steps as a table: a title, boxed rows (a section per flow),
    a caption."""
    sections: list[list[list[Segment]]] = []  # per flow, its rows; per row, its cells
    for flow in client.flows.values():
        rows = []
        for i, step in enumerate(flow.steps):
            first = i == 0
            rows.append(
                [
                    (flow.flow if first else "", ""),
                    (str(flow.version) if first else "", ""),
                    (flow.state if first else "", STATE_STYLES.get(flow.state, "")),
                    (step.identifier, ""),
                    (step.state, STATE_STYLES.get(step.state, "")),
                ]
            )
        sections.append(rows)
    cells = [row for rows in sections for row in rows]
    widths = [
        max([len(name), *(len(row[i][0]) for row in cells)]) for i, name in enumerate(COLUMNS)
    ]

    def rule(left: str, middle: str, right: str) -> Line:
        return [(left + middle.join("─" * (w + 2) for w in widths) + right, "")]

    def row(values: list[Segment]) -> Line:
        line: Line = [("│", "")]
        for i, (text, style) in enumerate(values):
            padded = text.rjust(widths[i]) if COLUMNS[i] == "v" else text.ljust(widths[i])
            line += [(" ", ""), (padded, style), (" │", "")]
        return line

    title: Line = [
        (client.person_key, "bold"),
        ("  ", ""),
        (client.status, STATUS_STYLES.get(client.status, "")),
    ]
    lines = [title, rule("┌", "┬", "┐"), row([(name, "bold") for name in COLUMNS])]
    for rows in sections:
        lines.append(rule("├", "┼", "┤"))
        lines += [row(values) for values in rows]
    lines.append(rule("└", "┴", "┘"))
    if not client.flows:
        caption = "no flows yet" if client.status == "live" else "waiting for the server…"
    else:
        caption = f"resume points: flow #{client.seq['flow']}, step #{client.seq['step']}"
    lines.append([(caption, "dim")])
    return lines


def paint(line: Line, color: bool, width: int | None = None) -> str:
    """A line as text: cut to `width` characters, each segment in its style when `color`."""
    out = []
    for text, style in line:
        if width is not None:
            text, width = text[: max(width, 0)], width - len(text)
        if text and color and style:
            out.append(f"\x1b[{';'.join(SGR[word] for word in style.split())}m{text}\x1b[0m")
        elif text:
            out.append(text)
    return "".join(out)


class Screen:
    """The table at the bottom of the terminal, redrawn in place, and lines printed above it.

    On a terminal, a redraw moves the cursor back to the table's first line and
    clears to the end of the screen (lines are cut to the terminal's width, the
    table to its height, so the count of lines to go back is exact). Elsewhere
    nothing is redrawn: each line is printed, and each table that differs from
    the last printed.
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty()
        self.color = (
            self.terminal and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        )
        self._table: list[str] = []  # the table shown, painted
        self._drawn = 0  # its lines on the terminal now

    def _size(self) -> tuple[int | None, int | None]:
        if not self.terminal:
            return None, None
        size = shutil.get_terminal_size()
        return size.columns - 1, max(size.lines - 2, 3)  # no auto-wrap at the last column

    def _erase(self) -> str:
        drawn, self._drawn = self._drawn, 0
        return f"\r\x1b[{drawn}A\x1b[J" if self.terminal and drawn else ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def show(self, table: list[Line]) -> None:
        width, height = self._size()
        painted = [paint(line, self.color, width) for line in table]
        if height is not None and len(painted) > height:
            painted = painted[: height - 1] + [paint([("…", "dim")], self.color, width)]
        if painted == self._table:
            return
        self._table = painted
        shown = "".join(line + "\n" for line in painted)
        if self.terminal:
            self._write(self._erase() + shown)
            self._drawn = len(painted)
        else:
            self._write(shown)

    def print(self, line: Line) -> None:
        width, _ = self._size()
        text = paint(line, self.color, width) + "\n"
        if self.terminal and self._drawn:
            text = self._erase() + text + "".join(shown + "\n" for shown in self._table)
            self._drawn = len(self._table)
        self._write(text)


async def watch(args: argparse.Namespace) -> int:
    from stepstream_client.client import Client

    # the status is in the table; the client's own log lines would only garble it
    logging.getLogger("stepstream.client").setLevel(logging.CRITICAL)
    screen = Screen()
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
    screen.print(
        [("watching ", ""), (args.person, "bold"), (f" at {args.url}  (Ctrl-C to stop)", "")]
    )

    def redraw(*_):
        screen.show(render(client))

    def print_event(change):
        screen.print(event_line(change))

    redraw()
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
        print(f"stepstream: {client.error}", file=sys.stderr)
        return 2
    return 0
