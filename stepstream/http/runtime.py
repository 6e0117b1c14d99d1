"""This server process's moving parts, in one object (Centrifuge's Node, Starlette's app.state).

`Runtime` is built when the ASGI lifespan starts and torn down when it ends:
the database threads and the threads serving Django, delivery's node (the
broker and the hub), the WebSocket gateway and its connection guard, the live
dashboard, the fast REST path, the key listener (PostgreSQL), the webhook
deliverer (in the first worker), the timer loop and the gauges of `serve --workers`. Each
part gets what it needs from it when made; none reaches for a module global.
A start that fails half-way unwinds what it started, in reverse order (an
`AsyncExitStack`), and so does `stop`.

The layers below HTTP (the engine, trust) learn of the runtime only through
what it registers while it runs: the engine's commit listeners
(stepstream.engine.commits) and the key memory's peers
(stepstream.trust.keycache.Peers).
"""

import asyncio
import contextlib

from django.conf import settings

from stepstream import delivery
from stepstream.config import is_first_worker
from stepstream.dbthreads import DbThreads
from stepstream.engine import commits, firing, log
from stepstream.engine.firing import Firing
from stepstream.trust import keycache, keywatch
from stepstream.ws.endpoint import Gateway
from stepstream.ws.guard import Guard


class Runtime:
    def __init__(self):
        from django.core.wsgi import get_wsgi_application

        from stepstream.http.bridge import ApiHandler, DjangoBridge
        from stepstream.http.dashboard.live import LiveDashboard
        from stepstream.http.fast import FastPath
        from stepstream.http.static import StaticFiles

        limits = settings.STEPSTREAM
        self.db = DbThreads(limits["DB_THREADS"])
        self.node = delivery.Node(self.db)
        self.guard = Guard(self.db)
        self.gateway = Gateway(self.db, self.node, self.guard)
        self.dashboard = LiveDashboard(self.db, self.node)
        self.keys = keycache.KeyMemory()  # secret keys this server has looked up
        self.fast = FastPath(self)
        # Django's views are synchronous, served as WSGI from a pool of threads
        # (stepstream.http.bridge), each request's environ carrying this runtime
        self.django = DjangoBridge(
            StaticFiles(get_wsgi_application()),
            threads=limits["HTTP_THREADS"],
            api_app=ApiHandler(),
            runtime=self,
        )
        self.keywatch: keywatch.Watcher | None = None
        self.deliverer = None  # stepstream.delivery.webhooks.worker.Deliverer, first worker
        self.firing: Firing | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    def hears_keys(self) -> bool:
        """Whether a key change made by another process would reach this one now."""
        watcher = self.keywatch
        return (watcher is not None and watcher.listening) or self.node.hears_keys()

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.db.shutdown)
            stack.callback(self.django.shutdown)
            await self.node.start()
            stack.push_async_callback(self.node.stop)
            for listener in (self.node.notify_committed, log.count_changes):
                commits.listen(listener)
                stack.callback(commits.unlisten, listener)
            # the key memory tells and hears the others through this runtime while it runs
            self.node.on_keys_changed(self.keys.forget)
            stack.callback(keycache.use_peers, keycache.current_peers())
            keycache.use_peers(
                keycache.Peers(
                    tell=self.node.keys_changed, hear=self.hears_keys, forget=self.keys.forget
                )
            )
            # durable timers and deferred starts (docs/rules.md): a loop in every process,
            # woken on PostgreSQL by any process's new timer (the same LISTEN connection)
            self.firing = Firing(self.db)
            self.keywatch = keywatch.start(self.keys.forget, {firing.CHANNEL: self.firing.heard})
            if self.keywatch is not None:  # stopping joins its thread: off the event loop
                stack.push_async_callback(asyncio.to_thread, self.keywatch.stop)
            stack.push_async_callback(self.guard.stop)
            stack.push_async_callback(self.dashboard.stop)
            if is_first_worker():  # once per server, not in each of --workers N
                from stepstream.delivery.webhooks.worker import Deliverer

                self.deliverer = Deliverer(self.db)
                await self.deliverer.start()
                stack.push_async_callback(self.deliverer.stop)
            await self.firing.start()
            stack.push_async_callback(self.firing.stop)
            self._gauges(stack)
            self._stack = stack.pop_all()

    def _gauges(self, stack: contextlib.AsyncExitStack) -> None:
        from stepstream.http import metrics_view
        from stepstream.metrics import REGISTRY

        if metrics_view.MULTIPROCESS:  # serve --workers N: gauges shared through files
            task = asyncio.get_running_loop().create_task(metrics_view.write_live_gauges(self))
            stack.callback(task.cancel)
        else:
            gauges = metrics_view.LiveGauges(self)
            REGISTRY.register(gauges)
            stack.callback(REGISTRY.unregister, gauges)

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
