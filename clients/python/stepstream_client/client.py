"""An async Python client for Stepstream: a live copy of one person's flows and steps.

The same client as the browser SDK (``/static/stepstream.js``), built on the
``websockets`` library::

    import asyncio
    from stepstream_client import connect


    async def main():
        async with connect("http://127.0.0.1:8000", "pk_...", "user-1") as client:
            print(client.flow("onboarding").state)             # "active"
            print(client.step("onboarding", "welcome").state)  # "active"
            await client.transition("onboarding", "start")
            async for change in client.events():
                print(change["seq"], change["identifier"], change["state"])


    asyncio.run(main())

How it stays exact (docs/protocol.md, "Resuming without loss"): the first
snapshot (``identify``, or ``get_state``) carries the person's ``seq``; both
subscriptions (``flow`` and ``step``) start from it with ``since_seq``, so
nothing is missed between them. Each entity keeps its own resume point
(``client.seq``): the two streams are separate and interleave. Every flow and
step remembers the ``seq`` of the last change applied to it, so a late or
repeated event never moves a state backwards. After a disconnect the client
reconnects with exponential backoff and full jitter (:func:`backoff_delay`) and
resubscribes from its resume points; if the person's log restarted (409) it
takes a fresh snapshot. The merging itself is
:class:`~stepstream_client.state.PersonState`'s, pure and synchronous: this
module feeds it what the socket brings.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, cast
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin

from .state import ENTITIES, Applied, Entity, FlowState, PersonState, StateChange, StepState

__all__ = [
    "Client",
    "FlowState",
    "StateChange",
    "Status",
    "StepState",
    "StepstreamError",
    "backoff_delay",
    "connect",
    "websocket_url",
]

# the name it always had, so logging set up for it keeps working; a library's
# NullHandler: with no logging configured, nothing reaches stderr (Python's
# "last resort" handler printed every warning there, even of errors the caller caught)
logger = logging.getLogger("stepstream.client")
logger.addHandler(logging.NullHandler())

_random = random.random  # the jitter's source (a test may pin it)


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] | None = None):
    """Seconds to wait before reconnect attempt `attempt` (0 first): exponential, full jitter.

    ``random(0, min(cap, base * 2**attempt))``, as the browser SDK computes it
    (``backoffDelay`` in stepstream.js): after a server restart thousands of
    clients spread evenly over the whole window instead of arriving together
    (docs/protocol.md, "Reconnecting").
    """
    ceiling = min(cap, base * 2 ** min(attempt, 62))
    return ceiling * (rand or _random)()


Status = Literal["connecting", "live", "reconnecting", "closed"]
TokenSource = str | Callable[[], str | Awaitable[str]]

#: Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes"):
#: code -> (StepstreamError.code, status, what to tell the application).
FATAL_CLOSE_CODES = {
    4401: ("invalid_key", 401, "invalid key"),
    4403: ("revoked", 403, "the key was revoked or this origin is refused"),
}


class StepstreamError(Exception):
    """An error answered by the server, or a connection problem (``status`` 0).

    ``code`` is machine-readable: the server's (``not_found``, ``conflict``,
    ``unauthenticated``, ...) or the client's own (``disconnected``,
    ``timeout``, ``closed``; ``invalid_key`` for close code 4401 and
    ``revoked`` for 4403, after which the client stops for good).
    """

    def __init__(self, message: str, *, status: int = 0, code: str = "", errors=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.errors: list[str] = list(errors) if errors else [message]


def websocket_url(url: str, key: str) -> str:
    """``http(s)://host:port`` (or ``ws(s)://``) to ``ws(s)://host:port/ws?key=KEY``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return urlunsplit((scheme, parts.netloc, "/ws", f"key={quote(key, safe='')}", ""))


class EventStream:
    """Async iterator over the changes received since its creation; ends when the client closes."""

    _END = object()

    def __init__(self, client: Client):
        self._client = client
        self._queue: asyncio.Queue = asyncio.Queue()
        client._streams.add(self._queue)
        if client.status == "closed":
            self._queue.put_nowait(self._END)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> StateChange:
        item = await self._queue.get()
        if item is self._END:
            self._client._streams.discard(self._queue)
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self._client._streams.discard(self._queue)


class Client:
    """A live copy of one person's flows and steps, kept up to date over one WebSocket.

    Args:
        url: the server's base URL, ``http://host:port`` (the WebSocket address is derived).
        key: the environment's publishable key.
        person_key: the person, as your product names them.
        person_token: for identity verification: a JWT, or a function (sync or
            async) returning a fresh one; sent as ``data.person_token`` on every action.
            A function is called again whenever the server ends a subscription
            because its token lapsed (``subscription_ended``): the client
            resubscribes with the fresh token and misses nothing. With a fixed
            string, the client stops with the server's reason instead.
        identify: take the first snapshot with ``identify`` (creates the person if
            unknown, merging ``data``), or, when false, with ``get_state`` (an unknown
            person is an error: the client closes with a 404).
        data: person data merged by ``identify``.
        replay_from: also replay the recorded changes after this ``seq`` through
            ``events()`` and ``on_event`` (0: the whole log); default: only changes
            after the snapshot. States are not affected.
        min_backoff, max_backoff: reconnect delays in seconds: attempt n waits a random
            time in ``[0, min(max_backoff, min_backoff * 2**n)]`` (full jitter).
        request_timeout: seconds a request may take.
        heartbeat: seconds between WebSocket pings; a socket silent for as long is dropped.
        origin: the ``Origin`` header to send, for an environment with an Origin
            allow-list (browsers send their page's; programs send none by default).
    """

    def __init__(
        self,
        url: str,
        key: str,
        person_key: str,
        *,
        person_token: TokenSource | None = None,
        identify: bool = True,
        data: dict[str, Any] | None = None,
        replay_from: int | None = None,
        min_backoff: float = 0.25,
        max_backoff: float = 10.0,
        request_timeout: float = 15.0,
        heartbeat: float = 20.0,
        origin: str | None = None,
    ):
        if not key:
            raise ValueError("key is required")
        if not person_key:
            raise ValueError("person_key is required")
        self.url = websocket_url(url, key)
        self.person_key = person_key
        # the person's flows and the resume points: the merging rules are PersonState's
        self._state = PersonState()
        #: The life of the person's log the resume points belong to (``get_state``'s ``epoch``).
        self.epoch: str | None = None
        self.status: Status = "connecting"
        #: Why the client closed by itself (a refused key, an unknown person...).
        self.error: StepstreamError | None = None
        #: The person's data, as the last ``identify`` answered.
        self.person_data: dict[str, Any] | None = None
        self._token_source = person_token
        self._token = person_token if isinstance(person_token, str) else None
        self._identify = identify
        self._data = data or {}
        self._replay_from = replay_from
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._request_timeout = request_timeout
        self._heartbeat = heartbeat
        self._origin = origin
        self._refresh_task: asyncio.Task | None = None
        self._refresh_again = False
        self._snapshotted = False
        self._ever_live = False
        self._ids = itertools.count(1)
        self._renewing: set[asyncio.Task] = set()
        self._pending: dict[int, asyncio.Future] = {}
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._waiters: set[asyncio.Future] = set()
        self._streams: set[asyncio.Queue] = set()
        self._event_callbacks: list[Callable[[StateChange], Any]] = []
        self._change_callbacks: list[Callable[[str], Any]] = []
        self._status_callbacks: list[Callable[[Status], Any]] = []

    # -- life cycle --------------------------------------------------------

    async def start(self, wait: bool = True, timeout: float | None = None) -> Client:
        """Starts connecting (in a background task); with ``wait``, returns once live.

        Raises ``StepstreamError`` if the client closes first (a refused key, an
        unknown person with ``identify=False``), or ``TimeoutError``.
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"stepstream {self.person_key}")
        if wait:
            await self.wait_live(timeout if timeout is not None else self._request_timeout)
        return self

    async def close(self) -> None:
        """Closes the connection for good; pending requests fail with ``closed``."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._finish()

    async def __aenter__(self) -> Client:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- reading state -----------------------------------------------------

    @property
    def flows(self) -> dict[str, FlowState]:
        """The person's flow instances, by flow identifier."""
        return self._state.flows

    @property
    def seq(self) -> dict[str, int]:
        """Resume points: the last ``seq`` received on each subscription."""
        return self._state.seq

    def flow(self, identifier: str) -> FlowState | None:
        """The person's instance of that flow, or None if they have none (yet)."""
        return self.flows.get(identifier)

    def step(self, flow: str, step: str) -> StepState | None:
        instance = self.flows.get(flow)
        return instance.step(step) if instance else None

    def events(self) -> EventStream:
        """The changes received from now on, once each, each entity in ``seq`` order."""
        return EventStream(self)

    def on_event(self, callback: Callable[[StateChange], Any]) -> Callable[[], None]:
        """Calls ``callback(change)`` for every change received; returns a remover."""
        self._event_callbacks.append(callback)
        return lambda: self._event_callbacks.remove(callback)

    def on_change(self, callback: Callable[[str], Any]) -> Callable[[], None]:
        """Calls ``callback(flow_identifier)`` after a flow (or a step of it) changed."""
        self._change_callbacks.append(callback)
        return lambda: self._change_callbacks.remove(callback)

    def on_status(self, callback: Callable[[Status], Any]) -> Callable[[], None]:
        """Calls ``callback(status)`` whenever the connection status changes."""
        self._status_callbacks.append(callback)
        return lambda: self._status_callbacks.remove(callback)

    async def wait_live(self, timeout: float | None = None) -> None:
        """Returns once connected, subscribed and up to date."""
        await self.wait_for(lambda c: c.status == "live", timeout)

    async def wait_for(self, predicate: Callable[[Client], bool], timeout: float | None = 10.0):
        """Waits until ``predicate(client)`` is true (checked after every change).

        Raises ``TimeoutError``, or the client's error if it closes first.
        """
        async with asyncio.timeout(timeout):
            while not predicate(self):
                if self.status == "closed":
                    raise self.error or StepstreamError("client closed", code="closed")
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.discard(waiter)
        return True

    # -- acting ------------------------------------------------------------

    async def transition(self, flow: str, transition: str) -> FlowState:
        """Calls a transition of one of the person's flows; waits to be live first.

        Returns the flow instance after the call, already applied to ``flows``.
        Raises ``StepstreamError``: 409 no active step has it or the flow is not
        active, 404 no such flow instance; ``disconnected`` if the connection
        dropped before the answer (the outcome is then unknown: the events tell).
        """
        await self._until_live()
        instance = await self._request("transition", {"flow": flow, "transition": transition})
        self._apply_instance(instance, instance["seq"])
        return self.flows.get(instance["flow"]) or FlowState.from_instance(
            instance, instance["seq"]
        )

    async def track(self, event: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
        """Records that the person did ``event``; rules it sets off run on the server.

        Returns ``{"person_key", "event", "count", "seq"}``. The changes it caused
        (flows started, automatic transitions) arrive as events, each with a
        ``cause`` naming the event.
        """
        await self._until_live()
        data: dict[str, Any] = {"event": event}
        if properties is not None:
            data["properties"] = properties
        return await self._request("track", data)

    async def restart(self, flow: str) -> FlowState:
        """Replaces the person's instance of ``flow`` with a new one of its latest version."""
        await self._until_live()
        instance = await self._request("restart", {"flow": flow})
        self._apply_instance(instance, instance["seq"])
        return self.flows.get(instance["flow"]) or FlowState.from_instance(
            instance, instance["seq"]
        )

    async def identify(self, data: dict[str, Any]) -> dict[str, Any]:
        """Merges ``data`` into the person's data; returns their data after it."""
        await self._until_live()
        state = await self._request("identify", {"data": data})
        self._apply_snapshot(state, replace=False)
        self.person_data = state["data"]
        return state["data"]

    async def refresh(self) -> None:
        """Reads a fresh snapshot (``get_state``) and merges it; rarely needed."""
        await self._until_live()
        self._apply_snapshot(await self._request("get_state", {}), replace=False)

    async def _until_live(self) -> None:
        try:
            await self.wait_live(self._request_timeout)
        except TimeoutError:
            raise StepstreamError("not connected", code="disconnected") from None

    def set_person_token(self, token: str) -> None:
        """The person token to send from now on."""
        self._token = token

    # -- the connection loop -------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                try:
                    await self._session()
                except _Fatal as e:
                    self._fail(e.error)
                    return
                except StepstreamError as e:
                    if e.code not in ("disconnected",):
                        logger.warning("stepstream: %s", e)
                except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as e:
                    logger.info("stepstream: connection failed: %s", e)
                if self._closing:
                    return
                if self.status == "live":
                    attempt = 0  # it was live: back off from the start again
                self._set_status("reconnecting" if self._snapshotted else "connecting")
                delay = backoff_delay(attempt, self._min_backoff, self._max_backoff)
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            self._ws = None

    async def _session(self) -> None:
        """One connection: open, snapshot if needed, subscribe, then read until it closes."""
        try:
            ws = await ws_connect(
                self.url,
                open_timeout=self._request_timeout,
                ping_interval=self._heartbeat or None,
                ping_timeout=self._heartbeat or None,
                close_timeout=2,
                max_size=None,
                origin=Origin(self._origin) if self._origin is not None else None,
            )
        except InvalidStatus as e:
            if e.response.status_code in (401, 403) and not self._ever_live:
                raise _Fatal(_refusal(e.response.status_code, e.response.body)) from None
            raise
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._subscribe(ws)
            self._ever_live = True
            self._set_status("live")
            if self._state.needs_snapshot:  # a refresh lost with the previous connection
                self._refresh_soon()
            await reader
        finally:
            self._ws = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._fail_pending(StepstreamError("connection closed", code="disconnected"))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            for task in list(self._renewing):
                task.cancel()
            code = ws.close_code
            if code in FATAL_CLOSE_CODES and not self._closing:
                kind, status, what = FATAL_CLOSE_CODES[code]
                reason = ws.close_reason or ""
                raise _Fatal(
                    StepstreamError(
                        f"{what} (close code {code}){': ' + reason if reason else ''}",
                        status=status,
                        code=kind,
                        errors=[reason] if reason else None,
                    )
                )

    async def _subscribe(self, ws: ClientConnection) -> None:
        await self._load_token()
        try:
            if not self._snapshotted:
                await self._snapshot()
            try:
                await self._subscribe_both()
            except StepstreamError as e:
                if e.status != 409:
                    raise
                # the person's log restarted (deleted and created again): reload the
                # state and follow the new log, rather than resume in the old one
                await self._snapshot()
                await self._subscribe_both()
        except StepstreamError as e:
            if e.status == 400 or (e.status == 404 and not self._snapshotted):
                raise _Fatal(e) from None  # e.g. data breaking the schema: retrying cannot help
            if e.status in (404, 409):
                self._snapshotted = False  # the person's log restarted: start over
            elif e.status in (401, 403):
                if not callable(self._token_source):
                    raise _Fatal(e) from None
                self._token = None  # fetch a fresh token on the next attempt
            raise

    async def _snapshot(self) -> None:
        """The person's state now (``identify`` or ``get_state``); resume points move to it."""
        if self._identify:
            state = await self._request("identify", {"data": self._data})
            self.person_data = state["data"]
        else:
            state = await self._request("get_state", {})
        restarted = self.epoch is not None and state.get("epoch") != self.epoch
        self._apply_snapshot(state, replace=True)
        self.epoch = state.get("epoch")
        start = self._replay_from if not restarted else None
        resume = start if start is not None and 0 <= start < state["seq"] else state["seq"]
        self._state.resume_from(resume)
        self._snapshotted = True

    async def _subscribe_both(self) -> None:
        answers = await asyncio.gather(
            *(self._subscribe_one(entity) for entity in ENTITIES), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer

    def _subscribe_one(self, entity: Entity) -> Awaitable[Any]:
        data: dict[str, Any] = {"entity": entity, "since_seq": self.seq[entity]}
        if self.epoch is not None:
            data["epoch"] = self.epoch
        return self._request("subscribe_state_change", data)

    def _subscription_ended(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        """The server ended a subscription: the person was deleted (404), so start over
        from a fresh snapshot; or its person token lapsed (401), so renew it, or stop."""
        data = message.get("data") or {}
        errors = data.get("errors") or ["the subscription ended"]
        status = data.get("status", 401)
        if status == 404:
            self._snapshotted = False
            task = asyncio.get_running_loop().create_task(ws.close())
        else:
            error = StepstreamError(
                " ".join(errors), status=status, code="unauthenticated", errors=errors
            )
            if not callable(self._token_source):
                raise _Fatal(error)
            entity = data.get("entity")
            if entity not in ENTITIES:
                return
            task = asyncio.get_running_loop().create_task(self._renew(ws, entity))
        self._renewing.add(task)
        task.add_done_callback(self._renewing.discard)

    async def _renew(self, ws: ClientConnection, entity: Entity) -> None:
        """Subscribes again with a fresh token from where this subscription stopped."""
        try:
            self._token = None
            await self._load_token()
            await self._subscribe_one(entity)
        except StepstreamError as e:
            logger.warning("stepstream: could not renew the %s subscription: %s", entity, e)
            if e.status == 409:
                self._snapshotted = False
            await ws.close()  # reconnect: a new session snapshots or subscribes afresh
        except Exception as e:  # the token function failed
            logger.warning("stepstream: could not get a fresh person token: %s", e)
            await ws.close()

    async def _load_token(self) -> None:
        source = self._token_source
        if callable(source) and self._token is None:
            token = source()
            self._token = await token if inspect.isawaitable(token) else token

    async def _read(self, ws: ClientConnection) -> None:
        try:
            await self._read_messages(ws)
        finally:  # nothing more will answer: requests in flight fail now, not at their timeout
            self._fail_pending(StepstreamError("connection closed", code="disconnected"))

    async def _read_messages(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("event") == "state_change":
                    self._apply_event(message["data"])
                    continue
                if message.get("event") == "subscription_ended":
                    self._subscription_ended(ws, message)
                    continue
                # the server echoes the request_id this client sent: one of its ints
                waiter = self._pending.pop(cast(int, message.get("request_id")), None)
                if waiter is None or waiter.done():
                    continue
                if message.get("status") == 200:
                    waiter.set_result(message.get("data"))
                else:
                    errors = message.get("errors") or [f"status {message.get('status')}"]
                    waiter.set_exception(
                        StepstreamError(
                            " ".join(errors),
                            status=message.get("status", 0),
                            code=message.get("code", ""),
                            errors=errors,
                        )
                    )

    async def _request(self, action: str, data: dict[str, Any] | None) -> Any:
        ws = self._ws
        if ws is None:
            raise StepstreamError("not connected", code="disconnected")
        request_id = next(self._ids)
        body: dict[str, Any] = {}
        if data is not None:
            body = {"person_key": self.person_key, **data}
            if self._token:
                body["person_token"] = self._token
        waiter = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        try:
            await ws.send(json.dumps({"action": action, "request_id": request_id, "data": body}))
            async with asyncio.timeout(self._request_timeout):
                return await waiter
        except ConnectionClosed:
            raise StepstreamError("connection closed", code="disconnected") from None
        except TimeoutError:
            raise StepstreamError(f"{action}: no answer", code="timeout") from None
        finally:
            self._pending.pop(request_id, None)
            # the reader may have failed it (the socket closed) while the send raised:
            # read here, else asyncio reports "Future exception was never retrieved"
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled():
                waiter.exception()

    # -- applying changes ----------------------------------------------------

    def _apply_event(self, change: StateChange) -> None:
        applied = self._state.apply_event(change)
        if not applied.new:
            return
        self._changed(applied)
        for callback in list(self._event_callbacks):
            callback(change)
        for queue in self._streams:
            queue.put_nowait(change)
        self._wake()

    def _apply_instance(self, instance: dict[str, Any], seq: int) -> None:
        self._changed(self._state.apply_instance(instance, seq))

    def _apply_snapshot(self, state: dict[str, Any], replace: bool) -> None:
        self._changed(self._state.apply_snapshot(state, replace=replace))
        self._wake()

    def _refresh_soon(self) -> None:
        if self._refresh_task is not None:
            self._refresh_again = True
            return

        async def refresh() -> None:
            try:
                self._apply_snapshot(await self._request("get_state", {}), replace=False)
            except StepstreamError as e:
                logger.warning("stepstream: refresh failed: %s", e)
            finally:
                self._refresh_task = None
                if self._refresh_again and self._state.needs_snapshot:
                    self._refresh_again = False
                    self._refresh_soon()

        self._refresh_task = asyncio.get_running_loop().create_task(refresh())

    # -- notifications -------------------------------------------------------

    def _changed(self, applied: Applied) -> None:
        """Tells the ``on_change`` callbacks; asks for a snapshot if events wait for one."""
        for flow in applied.changed:
            for callback in list(self._change_callbacks):
                callback(flow)
        if applied.needs_snapshot:
            self._refresh_soon()

    def _set_status(self, status: Status) -> None:
        if status == self.status:
            return
        self.status = status
        for callback in list(self._status_callbacks):
            callback(status)
        self._wake()

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    def _fail_pending(self, error: StepstreamError) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pending.clear()

    def _fail(self, error: StepstreamError) -> None:
        self.error = error
        # raised to whoever waits (start, wait_live, wait_for): theirs to report; logged
        # as a warning only when nobody waits for it
        level = logging.DEBUG if self._waiters else logging.WARNING
        logger.log(level, "stepstream: %s", error)
        self._closing = True
        self._finish()

    def _finish(self) -> None:
        self._fail_pending(StepstreamError("client closed", code="closed"))
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        for queue in self._streams:
            queue.put_nowait(EventStream._END)
        self._set_status("closed")


def _refusal(status: int, body: bytes | None) -> StepstreamError:
    """A refused handshake: a wrong key, or an Origin the environment does not allow."""
    errors, code = [], "unauthenticated"
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        answer = json.loads(body or b"")
        errors = [str(e) for e in answer.get("errors", [])]
        code = answer.get("code") or code
    reason = " ".join(errors) or "a missing, wrong or revoked key"
    return StepstreamError(
        f"the server refused the connection (HTTP {status}): {reason}",
        status=status,
        code=code,
        errors=errors or None,
    )


class _Fatal(Exception):
    """Stops the connection loop: reconnecting cannot help."""

    def __init__(self, error: StepstreamError):
        super().__init__(str(error))
        self.error = error


@contextlib.asynccontextmanager
async def connect(url: str, key: str, person_key: str, **options: Any) -> AsyncIterator[Client]:
    """``async with connect(url, key, person_key) as client``: a started, live :class:`Client`.

    Options are :class:`Client`'s keyword arguments.
    """
    client = Client(url, key, person_key, **options)
    try:
        await client.start()
        yield client
    finally:
        await client.close()
