"""The runtime (stepstream/http/runtime.py): one object per server process, built in the
lifespan, that owns what the process keeps running and unwinds it all."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_no_module_keeps_state_behind_a_global_statement():
    """Issue 28: the hub, broker, executors, guards and caches belong to the runtime."""
    found = []
    for path in (ROOT / "stepstream").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Global):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} global {node.names}")
    assert found == []


@pytest.mark.django_db(transaction=True)
async def test_a_runtime_starts_registers_itself_and_unwinds_all_of_it_on_stop():
    from stepstream.engine import commits
    from stepstream.http.runtime import Runtime
    from stepstream.trust import keycache

    before_peers = keycache.current_peers()
    runtime = Runtime()
    await runtime.start()
    try:
        assert runtime.node.hub is not None and runtime.node.hub.tasks
        assert runtime.node.notify_committed in commits._listeners
        assert keycache.current_peers() is not before_peers
        assert (await runtime.db.run(lambda: 41)) + 1 == 42
    finally:
        await runtime.stop()
    assert runtime.node.hub is None
    assert runtime.node.notify_committed not in commits._listeners
    assert keycache.current_peers() is before_peers
    with pytest.raises(RuntimeError):  # its database threads are gone with it
        await runtime.db.run(lambda: 1)


@pytest.mark.django_db(transaction=True)
async def test_a_start_that_fails_half_way_unwinds_what_it_started(monkeypatch):
    from stepstream.engine import commits
    from stepstream.http import runtime as runtime_module
    from stepstream.trust import keycache

    def broken(on_change, others=None):
        raise OSError("the key listener could not connect")

    monkeypatch.setattr(runtime_module.keywatch, "start", broken)
    before_peers = keycache.current_peers()
    runtime = runtime_module.Runtime()
    with pytest.raises(OSError):
        await runtime.start()
    assert runtime.node.hub is None  # started, then stopped again
    assert runtime.node.notify_committed not in commits._listeners
    assert keycache.current_peers() is before_peers
    with pytest.raises(RuntimeError):
        await runtime.db.run(lambda: 1)


@pytest.mark.django_db(transaction=True)
async def test_the_lifespan_says_why_startup_failed(monkeypatch):
    from stepstream.http import asgi
    from stepstream.http import runtime as runtime_module

    def broken(on_change, others=None):
        raise OSError("the key listener could not connect")

    monkeypatch.setattr(runtime_module.keywatch, "start", broken)
    app = asgi.Application()
    sent = []
    messages = iter([{"type": "lifespan.startup"}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [
        {"type": "lifespan.startup.failed", "message": "the key listener could not connect"}
    ]
    assert app.runtime is None
