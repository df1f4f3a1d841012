"""The Node: a worker that takes connections from route channels and runs the application.

Built on ``asgiref.server.StatelessServer``: one application instance per connection, its
application checker logging exceptions. Differences, and why:

- Capacity is reserved before a connection is taken: a route channel is read only while
  ``running + waiting receives < max_applications`` (one receive per key is kept while there is
  any room, so a quiet key cannot starve a busy one). Work beyond that stays in Redis for other
  Nodes; the base class's eviction of the oldest instance never happens.
- An instance's ``receive`` and ``send`` belong to its ``NodeConnection`` (below), which turns
  messages into frames on the edge's reply channel and feeds frames from the Node's own channel
  back in. The ``accept`` frame travels with the application's first messages when they come
  within ``ACCEPT_DELAY`` (one frame each way for a short request).

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
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from asgiref.compatibility import guarantee_single_callable, is_double_callable
from asgiref.server import StatelessServer
from uvicorn.protocols.utils import ClientDisconnected

from .cycle import HTTPCycle, WebSocketCycle, cycle_for
from .distributor import build_layer
from .layers import ChannelFull, RedisChannelLayer
from .layers.base import require_valid_channel_name
from .layers.shard import CONNECTION_ERRORS
from .lifespan import Lifespan
from .protocol import (
    Asgi,
    Connect,
    FrameError,
    Heartbeat,
    decode_frame,
    encode_accept,
    encode_asgi,
    encode_end,
    encode_heartbeat,
)

__all__ = ["Node", "NodeConnection"]

logger = logging.getLogger("distributed_asgi.node")

Message = dict[str, Any]

# Response bodies are cut into frames of at most this size, so a slow client holds at most
# capacity x this much in Redis and no single Redis value grows with the response.
MAX_BODY_FRAME = 128 * 1024
# Messages from the edge held for an application that is not calling receive(); beyond it the
# Node stops reading the connection's channel and the edge waits (flow control).
INBOX_LIMIT = 16
# More receives than this per key do not pop faster; they only hold more capacity.
RECEIVES_PER_KEY = 8
# How long the accept may wait for the application's first messages to travel with it. A
# Node that dies within this window after starting an application leaves the edge answering
# 503 (as if no Node had taken the connection); the saving is a frame and a Redis round trip
# each way on every short request.
ACCEPT_DELAY = 0.05
_FULL_BACKOFF_START = 0.002
_FULL_BACKOFF_MAX = 0.1


class Node(StatelessServer):
    """A worker serving ``cls`` (ASGI 2 or 3) or ``app`` (ASGI 3) from ``key``/``keys``.

    Redis: ``url``, else ``REDIS_URL`` when neither host nor port is given, else
    host/port/db/password; or a ready ``layer``. ``max_applications`` (1000) bounds concurrent
    connections; ``drain_timeout`` (30 s) bounds the graceful stop; ``lifespan`` is uvicorn's
    "auto"/"on"/"off". ``run()`` blocks and returns once stopped (raising ``LifespanFailed``
    if startup failed); ``await arun()`` embeds it; ``stop()`` asks it to drain and stop.
    """

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
        layer: RedisChannelLayer | None = None,
        layer_options: Mapping[str, Any] | None = None,
        max_applications: int = 1000,
        drain_timeout: float = 30.0,
        lifespan: str = "auto",
        heartbeat_interval: float = 2.0,
        heartbeat_misses: int = 3,
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
        if isinstance(max_applications, bool) or not isinstance(max_applications, int):
            raise ValueError(
                f"max_applications must be a positive integer, got {max_applications!r}"
            )
        if max_applications < 1:
            raise ValueError(
                f"max_applications must be a positive integer, got {max_applications!r}"
            )
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be one of 'auto', 'on', 'off', got {lifespan!r}")
        for what, value in (
            ("drain_timeout", drain_timeout),
            ("heartbeat_interval", heartbeat_interval),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
        super().__init__(  # type: ignore[no-untyped-call]
            guarantee_single_callable(application),  # type: ignore[no-untyped-call]
            max_applications,
        )
        double = is_double_callable(application)  # type: ignore[no-untyped-call]
        self.asgi_version = "2.0" if double else "3.0"
        self.layer = build_layer(
            host, port, db, password, url=url, layer=layer, layer_options=layer_options
        )
        self.keys = list(dict.fromkeys(names))
        self.drain_timeout = float(drain_timeout)
        self.lifespan_mode = lifespan
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_misses = max(1, int(heartbeat_misses))
        self.connections: dict[str, NodeConnection] = {}
        self.lifespan: Lifespan | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._receives: dict[asyncio.Future[Message], str] = {}
        self._turn = 0
        self._background: set[asyncio.Task[None]] = set()
        self._stop_requested = False
        self._signals = 0
        self._main_task: asyncio.Task[None] | None = None

    # -- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped (SIGTERM/SIGINT or ``stop()``); blocks."""
        asyncio.run(self._run_with_signals())

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
            self._stopping.set()

    async def arun(self) -> None:
        """Serve in the running event loop until stopped (for embedding)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self.lifespan = Lifespan(self.application, self.lifespan_mode, self.asgi_version)
        await self.lifespan.startup()
        checker = asyncio.ensure_future(self.application_checker())  # type: ignore[no-untyped-call]
        heartbeats = asyncio.ensure_future(self._heartbeat_loop())
        logger.info("Node listening on %s", ", ".join(repr(k) for k in self.keys))
        try:
            await self.handle()
            await self._drain()
        finally:
            for task in (checker, heartbeats):
                task.cancel()
            await asyncio.gather(checker, heartbeats, return_exceptions=True)
            # After a second signal nothing more is awaited: a hanging lifespan shutdown or
            # Redis is exactly what the user is cutting short.
            if self._signals < 2:
                await self._report_finished()
                await self.lifespan.shutdown()
                await self.layer.close()
            logger.info("Node stopped")

    # -- taking connections ----------------------------------------------------------------------

    async def handle(self) -> None:
        """Read route channels while there is room; start a connection per ``connect``.

        Receives are futures with done-callbacks rather than a wait loop: a finished receive
        starts its connection and a finished connection refills the receives, directly.
        """
        assert self._stopping is not None
        self._fill()
        try:
            await self._stopping.wait()
        finally:
            # Cancelled receives put anything they popped back at the head of the queue.
            self._cancel_receives()

    def _fill(self) -> None:
        stopping = self._stopping is None or self._stopping.is_set()
        if stopping or len(self.connections) >= self.max_applications:
            return
        room = self.max_applications - len(self.connections) - len(self._receives)
        waiting = dict.fromkeys(self.keys, 0)
        for key in self._receives.values():
            waiting[key] += 1
        for key in self.keys:  # one per key while there is any room: no key starves
            if waiting[key] == 0:
                self._receive(key)
                waiting[key] = 1
                room -= 1
        # Extra receives let one Redis round trip pop several connections under load.
        while room > 0 and any(n < RECEIVES_PER_KEY for n in waiting.values()):
            key = self.keys[self._turn % len(self.keys)]
            self._turn += 1
            if waiting[key] < RECEIVES_PER_KEY:
                self._receive(key)
                waiting[key] += 1
                room -= 1

    def _receive(self, key: str) -> None:
        future = asyncio.ensure_future(self.layer.receive(key))
        self._receives[future] = key
        future.add_done_callback(self._received)

    def _received(self, future: asyncio.Future[Message]) -> None:
        key = self._receives.pop(future, None)
        if key is None or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            logger.warning("receive on %r failed: %s", key, error)
            asyncio.get_running_loop().call_later(0.1, self._fill)
            return
        self._on_route_message(key, future.result())
        if len(self.connections) >= self.max_applications:
            self._cancel_receives()
        else:
            self._fill()

    def _cancel_receives(self) -> None:
        receives, self._receives = self._receives, {}
        for future in receives:
            future.cancel()

    def _on_route_message(self, key: str, raw: Message) -> None:
        try:
            frame = decode_frame(raw)
        except FrameError as exc:
            logger.warning("dropped a bad frame on %r: %s", key, exc)
            return
        if not isinstance(frame, Connect):
            logger.warning("dropped a %s frame on route channel %r", type(frame).__name__, key)
            return
        late = time.time() - frame.deadline
        if late > 0:
            logger.warning(
                "dropped connection %s (%s): its pick-up deadline passed %.2fs ago",
                frame.conn_id,
                _describe(frame.scope),
                late,
            )
            return
        stopping = self._stopping is not None and self._stopping.is_set()
        if stopping or len(self.connections) >= self.max_applications:
            # Popped beyond our room (one receive per key is kept): hand it back.
            self._spawn(self._hand_back(key, raw))
            return
        self._start(frame)

    async def _hand_back(self, key: str, raw: Message) -> None:
        with contextlib.suppress(ChannelFull, *CONNECTION_ERRORS):
            await self.layer.send(key, raw)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start(self, connect: Connect) -> None:
        scope = connect.scope
        scope["asgi"] = {**scope.get("asgi", {}), "version": self.asgi_version}
        assert self.lifespan is not None
        scope["state"] = self.lifespan.state.copy()
        connection = NodeConnection(self, connect, scope)
        self.connections[connection.conn_id] = connection
        self.get_or_create_application_instance(connection.conn_id, scope)

    def get_or_create_application_instance(self, scope_id: str, scope: Mapping[str, Any]) -> Any:
        """The base class's bookkeeping, without its eviction: capacity is reserved before a
        connection is taken, so there is never an instance to evict."""
        details = self.application_instances.get(scope_id)
        if details is not None:
            details["last_used"] = time.time()
            return details["input_queue"]
        connection = self.connections[scope_id]
        future = asyncio.ensure_future(connection.run(self.application))
        self.application_instances[scope_id] = {
            "input_queue": connection.inbox,
            "future": future,
            "scope": scope,
            "last_used": time.time(),
        }
        return connection.inbox

    def connection_done(self, connection: NodeConnection) -> None:
        self.connections.pop(connection.conn_id, None)
        self._fill()

    async def application_send(self, scope: Mapping[str, Any], message: Message) -> None:
        raise RuntimeError("Node sends through each connection's own send()")

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
        logger.error(
            "Exception inside application: %s\n%s",
            exception,
            "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            ),
        )

    # -- heartbeats: one task for all connections ----------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval / 2)
            due = time.monotonic() - self.heartbeat_interval
            beats = [
                c.send_heartbeat() for c in list(self.connections.values()) if c.last_sent < due
            ]
            if beats:
                await asyncio.gather(*beats)


class NodeConnection:
    """One connection on the Node: the application's receive() and send(), over frames."""

    def __init__(self, node: Node, connect: Connect, scope: dict[str, Any]) -> None:
        self.node = node
        self.layer = node.layer
        self.conn_id = connect.conn_id
        self.reply_channel = connect.reply_channel
        self.scope = scope
        self.is_http = scope["type"] == "http"
        self.is_head = self.is_http and scope.get("method") == "HEAD"
        self.cycle: HTTPCycle | WebSocketCycle = cycle_for(scope)
        self.edge_window = connect.heartbeat * node.heartbeat_misses
        self.inbox: deque[Message] = deque(connect.messages)
        self.channel = ""
        self.disconnected = False  # the client (or the edge) is gone
        self.last_sent = time.monotonic()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._pending_start: Message | None = None
        self._flushing: asyncio.Task[None] | None = None
        self.accepted = False
        self._reader: asyncio.Task[None] | None = None
        self._accepting: asyncio.Task[None] | None = None
        for message in connect.messages:
            self.cycle.on_receive(message)

    # -- the instance ------------------------------------------------------------------------

    async def run(self, application: Callable[..., Awaitable[None]]) -> None:
        self.channel = await self.layer.new_channel("node")
        # The accept waits (briefly) for the application's first messages so that a short
        # request costs one frame each way; see ACCEPT_DELAY.
        accept_timer = asyncio.get_running_loop().call_later(ACCEPT_DELAY, self._accept_soon)
        error: BaseException | None = None
        try:
            await application(self.scope, self.receive, self.send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self._reader is not None:
                self._reader.cancel()
            accept_timer.cancel()
            try:
                await self._finish(error)
            finally:
                self.node.connection_done(self)

    async def _finish(self, error: BaseException | None) -> None:
        await self._flush_start()
        if self._accepting is not None:
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self.disconnected or self.cycle.finished:
            return
        if isinstance(self.cycle, HTTPCycle) and not self.cycle.response_started:
            if error is None:
                logger.error("ASGI callable returned without starting response.")
            with contextlib.suppress(Exception):
                await self.send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await self.send({"type": "http.response.body", "body": b"Internal Server Error"})
            return
        if error is None and isinstance(self.cycle, HTTPCycle):
            logger.error("ASGI callable returned without completing response.")
        text = None if error is None else f"{type(error).__name__}: {error}"
        with contextlib.suppress(ChannelFull, *CONNECTION_ERRORS):
            await self._ensure_accepted()
            await self._send_frame(encode_end(self.conn_id, text), retry=False)

    # -- receive ---------------------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if isinstance(self.cycle, HTTPCycle) and self.cycle.response_complete:
                return {"type": "http.disconnect"}  # as uvicorn: nothing more to read
            if self.inbox:
                message = self.inbox.popleft()
                self._room.set()
                return message
            if not self.accepted:
                # The edge needs the Node's channel before it can send anything more.
                await self._ensure_accepted()
                continue
            if isinstance(self.cycle, WebSocketCycle) and self.cycle.finished:
                return {"type": "websocket.disconnect", "code": 1005}
            self._arrived.clear()
            await self._arrived.wait()

    async def _read_from_edge(self) -> None:
        while True:
            try:
                raw = await asyncio.wait_for(self.layer.receive(self.channel), self.edge_window)
            except asyncio.TimeoutError:
                logger.warning(
                    "the edge of %s sent nothing for %.1fs: treating the client as gone",
                    _describe(self.scope),
                    self.edge_window,
                )
                self._deliver(
                    {"type": "http.disconnect"}
                    if self.is_http
                    else {"type": "websocket.disconnect", "code": 1006}
                )
                return
            except CONNECTION_ERRORS:
                await asyncio.sleep(0.1)
                continue
            try:
                frame = decode_frame(raw)
            except FrameError as exc:
                logger.warning("dropped a bad frame on %s: %s", self.channel, exc)
                continue
            if isinstance(frame, Heartbeat):
                continue
            if not isinstance(frame, Asgi):
                logger.warning("dropped a %s frame from the edge", type(frame).__name__)
                continue
            for message in frame.messages:
                self._deliver(message)
            if self.disconnected:
                return
            while len(self.inbox) >= INBOX_LIMIT:
                self._room.clear()
                await self._room.wait()

    def _deliver(self, message: Message) -> None:
        self.cycle.on_receive(message)
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            self.disconnected = True
        self.inbox.append(message)
        self._arrived.set()

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.disconnected:
            if self.is_http:
                return  # as uvicorn: sending to a gone client is a no-op for HTTP
            raise ClientDisconnected()
        self.cycle.on_send(message)
        kind = message["type"]
        if kind == "http.response.start":
            # Held for one loop turn: a body sent right after travels in the same frame.
            self._pending_start = _plain_response_start(message)
            asyncio.get_running_loop().call_soon(self._schedule_flush)
            return
        if kind == "http.response.body":
            await self._send_body(message)
            if self.cycle.finished:
                self._arrived.set()
            return
        await self._flush_start()
        await self._send_messages([_plain_message(message)])

    async def _send_body(self, message: Message) -> None:
        body = bytes(message.get("body", b""))
        more_body = bool(message.get("more_body", False))
        if self.is_head:
            body = b""
        chunks = [body[i : i + MAX_BODY_FRAME] for i in range(0, len(body), MAX_BODY_FRAME)] or [
            b""
        ]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            part = {"type": "http.response.body", "body": chunk, "more_body": more_body or not last}
            batch = [part]
            if self._pending_start is not None:
                batch.insert(0, self._pending_start)
                self._pending_start = None
            await self._flush_start()
            await self._send_messages(batch)

    def _schedule_flush(self) -> None:
        if self._pending_start is not None and self._flushing is None:
            self._flushing = asyncio.ensure_future(self._send_pending_start())

    async def _send_pending_start(self) -> None:
        start, self._pending_start = self._pending_start, None
        if start is not None:
            await self._send_messages([start])

    async def _flush_start(self) -> None:
        """Make sure a held ``http.response.start`` is on its way before anything after it."""
        if self._pending_start is not None:
            await self._send_pending_start()
        if self._flushing is not None:
            await self._flushing

    async def _send_messages(self, messages: list[Message]) -> None:
        async with self._send_lock:
            if self.accepted:
                frame = encode_asgi(self.conn_id, messages)
            else:
                frame = self._accept_frame(messages)
            await self._push(frame, retry=True)

    def _accept_frame(self, messages: list[Message]) -> Message:
        self.accepted = True
        # Nothing can come from the edge before it has the accept; after a finished response
        # nothing that matters can come at all.
        if not self.cycle.finished:
            self._reader = asyncio.ensure_future(self._read_from_edge())
        return encode_accept(self.conn_id, self.channel, self.node.heartbeat_interval, messages)

    def _accept_soon(self) -> None:
        if not self.accepted and self._accepting is None:
            self._accepting = asyncio.ensure_future(self._ensure_accepted())

    async def _ensure_accepted(self) -> None:
        if self.accepted:
            return
        async with self._send_lock:
            if not self.accepted:
                await self._push(self._accept_frame([]), retry=False)

    async def _send_frame(self, frame: Message, *, retry: bool = True) -> None:
        async with self._send_lock:
            await self._push(frame, retry=retry)

    async def _push(self, frame: Message, *, retry: bool) -> None:
        delay = _FULL_BACKOFF_START
        while True:
            try:
                await self.layer.send(self.reply_channel, frame)
            except ChannelFull:
                # The edge is slower than the application: wait for it (flow control).
                if not retry or self.disconnected:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _FULL_BACKOFF_MAX)
                continue
            self.last_sent = time.monotonic()
            return

    async def send_heartbeat(self) -> None:
        if not self.accepted:
            return  # the edge only listens for an accept until then
        self.last_sent = time.monotonic()
        with contextlib.suppress(ChannelFull, *CONNECTION_ERRORS):
            await self.layer.send(self.reply_channel, encode_heartbeat(self.conn_id))


def _plain_response_start(message: Message) -> Message:
    return {
        "type": "http.response.start",
        "status": int(message["status"]),
        "headers": [[bytes(k), bytes(v)] for k, v in message.get("headers", ())],
        **({"trailers": True} if message.get("trailers") else {}),
    }


def _plain_message(message: Message) -> Message:
    """A msgpack-safe copy (headers as lists of bytes, bytearray as bytes)."""
    plain = dict(message)
    if "headers" in plain:
        plain["headers"] = [[bytes(k), bytes(v)] for k, v in plain["headers"]]
    for key in ("bytes", "body"):
        if isinstance(plain.get(key), (bytearray, memoryview)):
            plain[key] = bytes(plain[key])
    return plain


def _describe(scope: Mapping[str, Any]) -> str:
    kind = "WebSocket" if scope.get("type") == "websocket" else scope.get("method", "HTTP")
    return f"{kind} {scope.get('path', '?')}"
