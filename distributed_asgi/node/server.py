"""The Node: a worker that takes connections from route channels and runs the application.

Built on ``asgiref.server.StatelessServer``: ``handle()`` takes connections,
``get_or_create_application_instance`` records one application instance per connection in
``application_instances``, ``application_checker`` reaps them and hands their exceptions to
``application_exception``. Differences, and why:

- Capacity is reserved before a connection is taken (node/intake.py): the receives waiting on
  the route channels never exceed the room (``max_applications`` minus running connections),
  so the base class's eviction of the oldest instance never happens, and work beyond the room
  stays in Redis for other Nodes. An instance runs in the task that received its connect.
- An instance's ``receive`` and ``send`` belong to its ``NodeConnection``
  (node/connection.py), which writes the ``accept`` before the application's first line runs,
  turns messages into frames on the edge's reply channel and feeds frames from the Node's own
  channel back in.

Stopping (``stop()``, SIGTERM, SIGINT): stop reading route channels, let running connections
finish for up to ``drain_timeout``, cancel the rest, run lifespan shutdown, return. A second
signal cancels everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import traceback
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from asgiref.server import StatelessServer

from distributed_asgi._liveness import Liveness
from distributed_asgi.core.frames import Connect, FrameError, decode_frame, describe
from distributed_asgi.core.names import require_valid_channel_name
from distributed_asgi.core.outcomes import NodeRecorder
from distributed_asgi.core.types import Message
from distributed_asgi.layers import ChannelFull, GatewayLayer, LayerError
from distributed_asgi.layers.build import build_layer
from distributed_asgi.layers.validate import require_capacity, require_seconds
from distributed_asgi.node.acceptance import NodeClaims
from distributed_asgi.node.connection import NodeConnection
from distributed_asgi.node.event_loop import loop_factory, run_in_new_loop
from distributed_asgi.node.intake import Traffic, new_intake
from distributed_asgi.node.interface import as_asgi3
from distributed_asgi.node.lifespan import Lifespan
from distributed_asgi.node.presence import NodeStats, Presence, new_node_id

__all__ = ["Node", "NodeConnection"]

logger = logging.getLogger("distributed_asgi.node")


class Node(StatelessServer):
    """A worker serving ``cls`` or ``app`` from ``key``/``keys``.

    The application is ASGI 2 or 3, told apart as uvicorn does (``interface`` "auto"), or as
    ``interface`` "asgi3"/"asgi2" says.

    Redis: ``url``, else ``REDIS_URL`` when neither host nor port is given, else
    host/port/db/password; or a ready ``layer``. ``max_applications`` (1000) bounds concurrent
    connections; ``drain_timeout`` (30 s) bounds the graceful stop; ``lifespan`` is uvicorn's
    "auto"/"on"/"off". ``run()`` blocks and returns once stopped (raising ``LifespanFailed``
    if startup failed), in an event loop of the ``loop`` kind: "auto" (uvloop when installed,
    as ``uvicorn.run``), "asyncio" or "uvloop"; ``await arun()`` embeds it in the running loop;
    ``stop()`` asks it to drain and stop.
    """

    max_applications: int  # set by StatelessServer.__init__
    # The base class scans every instance this often to reap it and log its exception
    # (connection_done lets go at once of one that ended cleanly), not ten times a second:
    # 2,000 idle connections are scanned rarely, and the room and counters are kept by
    # connection_done.
    application_checker_interval = 1.0

    def __init__(
        self,
        host: str | None = None,
        port: int | str | None = None,
        password: str | None = None,
        cls: Any = None,
        key: str | None = None,
        *,
        app: Any = None,
        keys: Iterable[str] | None = None,
        db: int = 0,
        url: str | None = None,
        layer: GatewayLayer | None = None,
        layer_options: Mapping[str, Any] | None = None,
        max_applications: int = 1000,
        limits: Mapping[str, int] | None = None,
        priority: bool = False,
        priority_share: int = 10,
        drain_timeout: float = 30.0,
        lifespan: str = "auto",
        interface: str = "auto",
        heartbeat_interval: float = 2.0,
        heartbeat_misses: int = 3,
        metrics: NodeRecorder | None = None,
        loop: str = "auto",
    ) -> None:
        if (cls is None) == (app is None):
            raise ValueError("Node needs exactly one of cls= (ASGI 2 or 3) or app= (ASGI 3)")
        application = cls if cls is not None else app
        if not callable(application):
            raise ValueError(f"the application must be callable, got {application!r}")
        names = ([key] if key is not None else []) + list(keys or [])
        if not names:
            raise ValueError("Node needs at least one channel to listen on: key= or keys=")
        for name in names:
            try:
                require_valid_channel_name(name)
            except TypeError as exc:
                raise ValueError(f"invalid key {name!r}: {exc}") from None
            if "!" in name:
                raise ValueError(f"invalid key {name!r}: a route key cannot contain '!'")
        require_capacity("max_applications", max_applications)
        self.loop_factory = loop_factory(loop)
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be one of 'auto', 'on', 'off', got {lifespan!r}")
        if (
            isinstance(drain_timeout, bool)
            or not isinstance(drain_timeout, (int, float))
            or drain_timeout < 0
        ):
            raise ValueError(
                f"drain_timeout must be a number of seconds >= 0, got {drain_timeout!r}"
            )
        self.heartbeat_interval = require_seconds("heartbeat_interval", heartbeat_interval)
        self.heartbeat_misses = require_capacity("heartbeat_misses", heartbeat_misses)
        single, self.asgi_version = as_asgi3(application, interface)
        super().__init__(single, max_applications)  # type: ignore[no-untyped-call]
        self.layer = build_layer(
            host, port, db, password, url=url, layer=layer, layer_options=layer_options
        )
        self.claims = NodeClaims.of(self.layer)  # None: the layer cannot claim
        self.keys = list(dict.fromkeys(names))
        self.drain_timeout = float(drain_timeout)
        self.lifespan_mode = lifespan
        self.connections: dict[str, NodeConnection] = {}
        self.lifespan: Lifespan | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._taking = False  # running and not stopping: _stopping made and not set
        traffic = Traffic(limits, priority, priority_share)  # node/intake.py; operations.md
        self.intake = new_intake(self.layer, self.keys, self._room, self._on_route_message, traffic)
        self._background: set[asyncio.Task[None]] = set()
        self._stop_requested = False
        self._signals = 0
        self._main_task: asyncio.Task[None] | None = None
        # Counted here (plain integers), published with the presence key once per heartbeat.
        self.node_id = new_node_id()
        self.stats = NodeStats()
        self.presence = Presence(
            self.layer,
            self.node_id,
            self.keys,
            max_applications,
            self.heartbeat_interval,
            self.stats,
            self.intake,
        )
        self.metrics = metrics
        self.liveness: Liveness[NodeConnection] = Liveness(
            self.layer,
            "node",
            self.heartbeat_interval,
            NodeConnection.edge_lost,
            NodeConnection.edge_dropped,
        )

    # -- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped (SIGTERM/SIGINT or ``stop()``); blocks. In a new event loop of
        the ``loop`` kind (uvloop when "auto" and it is installed, as ``uvicorn.run``)."""
        run_in_new_loop(self._run_with_signals(), self.loop_factory)

    async def _run_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        self._main_task = asyncio.current_task()
        try:
            await self.arun()
        except asyncio.CancelledError:
            if self._signals < 2:
                raise
            logger.warning("Node stopped at once on a second signal")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("%s received: finishing in-flight connections", signal.Signals(sig).name)
            self.stop()
        elif self._main_task is not None:
            logger.warning("%s received again: exiting now", signal.Signals(sig).name)
            self._main_task.cancel()

    def stop(self) -> None:
        """Ask the Node to drain and stop. Safe from any thread and from signal handlers."""
        self._stop_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._request_stop()
        else:
            loop.call_soon_threadsafe(self._request_stop)

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._taking = False
            self._stopping.set()

    async def arun(self) -> None:
        """Serve in the running event loop until stopped (for embedding)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._taking = not self._stop_requested
        if self._stop_requested:
            self._stopping.set()
        self.lifespan = Lifespan(self.application, self.lifespan_mode, self.asgi_version)
        await self.lifespan.startup()
        await self.liveness.channel()  # named in every accept
        checker = asyncio.ensure_future(self.application_checker())  # type: ignore[no-untyped-call]
        # In the background: a Redis that does not answer must not hold up the start.
        self._spawn(self.presence.publish(0))
        heartbeats = asyncio.ensure_future(self._heartbeat_loop())
        logger.info(
            "Node listening on %s (joined as %s)",
            ", ".join(repr(k) for k in self.keys),
            self.node_id,
            extra={"node_id": self.node_id, "keys": self.keys},
        )
        try:
            await self.handle()
            # No longer taking work: leave the status view now, not when the drain ends.
            await self.presence.remove()
            logger.info(
                "Node %s left: served %d connection(s), %d failed",
                self.node_id,
                self.stats.served,
                self.stats.errors,
                extra={
                    "node_id": self.node_id,
                    "served": self.stats.served,
                    "errors": self.stats.errors,
                },
            )
            await self._drain()
            # Receives cancelled as the Node stopped take it in the next loop turn, and one
            # that had its connect just then hands it back; the hand-backs must reach Redis
            # before the layer closes, or they are lost with it.
            await asyncio.sleep(0)
            await asyncio.gather(*self._background, return_exceptions=True)
        finally:
            for task in (checker, heartbeats):
                task.cancel()
            await asyncio.gather(checker, heartbeats, return_exceptions=True)
            await self.liveness.aclose()
            # After a second signal nothing more is awaited: a hanging lifespan shutdown or
            # Redis is exactly what the user is cutting short.
            if self._signals < 2:
                await self._report_finished()
                await self.lifespan.shutdown()
                await _close_layer(self.layer)
            logger.info("Node stopped")

    # -- taking connections ----------------------------------------------------------------------

    async def handle(self) -> None:
        """Read route channels while there is room; start a connection per ``connect``."""
        assert self._stopping is not None
        self.intake.loop = self._loop
        self.intake.fill()
        try:
            await self._stopping.wait()
        finally:
            # Cancelled receives put anything they popped back at the head of the queue.
            self.intake.cancel()

    def _room(self) -> int:
        """How many more connections this Node may take now."""
        if not self._taking:
            return 0
        return self.max_applications - len(self.connections)

    def _on_route_message(self, key: str, raw: Message) -> Awaitable[None] | None:
        """The connection ``raw`` starts, to run in the intake's task; None if it starts none."""
        try:
            frame = decode_frame(raw)
        except FrameError as exc:
            logger.warning("dropped a bad frame on %r: %s", key, exc)
            return None
        if not isinstance(frame, Connect):
            logger.warning("dropped a %s frame on route channel %r", type(frame).__name__, key)
            return None
        late = time.time() - frame.deadline
        if late > 0:
            if self.metrics is not None:
                self.metrics.dropped_late(key)
            logger.warning(
                "dropped connection %s (%s): its pick-up deadline passed %.2fs ago",
                frame.conn_id,
                describe(frame.scope),
                late,
            )
            return None
        if frame.conn_id in self.connections:
            logger.warning("dropped a second connect for connection %s", frame.conn_id)
            return None
        if self._room() <= 0 or not self.intake.has_room(key):
            # Popped beyond our room (a receive finished as the Node stopped or filled up).
            self._spawn(self._hand_back(key, raw))
            return None
        return self._start(key, frame)

    async def _hand_back(self, key: str, raw: Message) -> None:
        with contextlib.suppress(ChannelFull, LayerError):
            await self.layer.send(key, raw)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start(self, key: str, connect: Connect) -> Awaitable[None]:
        scope = connect.scope
        scope["asgi"] = {**scope.get("asgi", {}), "version": self.asgi_version}
        assert self.lifespan is not None
        scope["state"] = self.lifespan.state.copy()
        connection = NodeConnection(
            self.layer,
            connect,
            scope,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_misses=self.heartbeat_misses,
            on_done=self.connection_done,
            liveness=self.liveness,
            peer=self.liveness.name,
            node_id=self.node_id,
            loop=self._loop,
            claims=self.claims,
        )
        connection.route_key = key
        self.connections[connection.conn_id] = connection
        self.intake.started(key)
        if self.metrics is not None:
            self.metrics.connection_started()
        self.get_or_create_application_instance(connection.conn_id, scope)
        return connection.run(self.application)

    def get_or_create_application_instance(self, scope_id: str, scope: Mapping[str, Any]) -> Any:
        # Overridden: the base's unbounded input queue would defeat flow control, and its
        # eviction never applies (room is reserved before a connect is taken). The instance runs
        # in the intake's task that took its connect (node/intake.py): that task is its future.
        task = asyncio.current_task(self._loop)
        assert task is not None, "called from the intake's task"
        self.application_instances[scope_id] = {"future": task, "scope": scope}
        return self.connections[scope_id].inbox

    def connection_done(self, connection: NodeConnection) -> None:
        self.connections.pop(connection.conn_id, None)
        if not connection.raised:
            # Ended cleanly: nothing for the application checker to log, nothing to keep for it.
            self.application_instances.pop(connection.conn_id, None)
        if self.metrics is not None:
            self.metrics.connection_ended()
        if connection.started:  # else it could not be accepted in time: nothing was served
            stats = self.stats
            stats.served += 1
            if connection.failed:
                stats.errors += 1
            if self.metrics is not None:
                self.metrics.finished(
                    connection.route_key, connection.failed, time.monotonic() - connection.taken
                )
        self.intake.ended(connection.route_key)

    # -- stopping ----------------------------------------------------------------------------------

    async def _drain(self) -> None:
        if not self.connections:
            return
        logger.info("Waiting for %d connection(s) to finish", len(self.connections))
        futures = [d["future"] for d in self.application_instances.values()]
        _, pending = (
            await asyncio.wait(futures, timeout=self.drain_timeout) if futures else ((), ())
        )
        if pending:
            logger.warning(
                "drain timeout (%.1fs): cancelling %d connection(s)",
                self.drain_timeout,
                len(pending),
            )
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _report_finished(self) -> None:
        """The application checker's last pass, for instances that ended after its last run."""
        for scope_id, details in list(self.application_instances.items()):
            future = details["future"]
            if future.done():
                if not future.cancelled() and future.exception() is not None:
                    await self.application_exception(future.exception(), details)
                self.application_instances.pop(scope_id, None)

    async def application_exception(
        self, exception: BaseException, application_details: Any
    ) -> None:
        # Overridden: the Node's logger, and the whole chained traceback (the base's has
        # neither).
        logger.error(
            "Exception inside application: %s\n%s",
            exception,
            "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            ),
        )

    # -- presence: once per heartbeat interval (the edges' liveness is self.liveness's) ---------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self._stopping is None or not self._stopping.is_set():
                # Its own task: a slow Redis must not delay the next publication.
                self._spawn(self.presence.publish(len(self.connections)))


async def _close_layer(layer: GatewayLayer) -> None:
    """Close the layer's connections; a failure here must not turn a clean stop into an error."""
    try:
        await layer.close()
    except Exception as exc:
        logger.warning("closing the channel layer failed: %s: %s", type(exc).__name__, exc)
