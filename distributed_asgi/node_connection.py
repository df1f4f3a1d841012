"""One connection on a Node: the application's ``receive()`` and ``send()``, over frames.

Rules of this file:

- Everything the application sends goes out in order under one lock, as ``asgi`` frames on the
  edge's reply channel; the first one is an ``accept`` carrying the application's first
  messages when they come within ``ACCEPT_DELAY``.
- ``http.response.start`` is held for one loop turn so a body sent right after it travels in
  the same frame; bodies are cut into frames of at most ``MAX_BODY_FRAME``.
- ``ChannelFull`` on the reply channel is flow control: wait and retry while the client is there.
- Frames from the edge are read only once the edge can send them (after the accept), into an
  inbox of at most ``INBOX_LIMIT`` messages; an edge silent for ``heartbeat_misses`` of its
  heartbeat intervals is gone, and the application sees a disconnect.
- After a disconnect, HTTP sends are ignored and WebSocket sends raise ``ClientDisconnected``,
  as uvicorn does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected

from ._aio import receive_within
from .cycle import HTTPCycle, WebSocketCycle, cycle_for
from .layers import ChannelFull, GatewayLayer
from .layers.shard import CONNECTION_ERRORS
from .protocol import (
    Asgi,
    Connect,
    FrameError,
    Heartbeat,
    check_client_message,
    decode_frame,
    encode_accept,
    encode_asgi,
    encode_end,
    encode_heartbeat,
)

__all__ = ["ACCEPT_DELAY", "INBOX_LIMIT", "MAX_BODY_FRAME", "NodeConnection", "describe"]

logger = logging.getLogger("distributed_asgi.node")

Message = dict[str, Any]

# Response bodies are cut into frames of at most this size, so a slow client holds at most
# capacity x this much in Redis and no single Redis value grows with the response.
MAX_BODY_FRAME = 128 * 1024
# Messages from the edge held for an application that is not calling receive(); beyond it the
# Node stops reading the connection's channel and the edge waits (flow control).
INBOX_LIMIT = 16
# How long the accept may wait for the application's first messages to travel with it. A
# Node that dies within this window after starting an application leaves the edge answering
# 503 (as if no Node had taken the connection); the saving is a frame and a Redis round trip
# each way on every short request.
ACCEPT_DELAY = 0.05
_FULL_BACKOFF_START = 0.002
_FULL_BACKOFF_MAX = 0.1


class NodeConnection:
    """One connection on the Node: the application's receive() and send(), over frames."""

    def __init__(
        self,
        layer: GatewayLayer,
        connect: Connect,
        scope: dict[str, Any],
        *,
        heartbeat_interval: float,
        heartbeat_misses: int,
        on_done: Callable[[NodeConnection], None],
    ) -> None:
        self.layer = layer
        self.heartbeat_interval = heartbeat_interval
        self.on_done = on_done
        self.route_key = ""  # the route channel it came from, for the Node's counters
        self.taken = time.monotonic()
        self.failed = False  # the application raised
        self.conn_id = connect.conn_id
        self.reply_channel = connect.reply_channel
        self.scope = scope
        self.is_http = scope["type"] == "http"
        self.is_head = self.is_http and scope.get("method") == "HEAD"
        self.cycle: HTTPCycle | WebSocketCycle = cycle_for(scope)
        self.edge_window = connect.heartbeat * heartbeat_misses
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
            self.failed = not isinstance(exc, asyncio.CancelledError)
            raise
        finally:
            if self._reader is not None:
                self._reader.cancel()
            accept_timer.cancel()
            try:
                await self._finish(error)
            finally:
                self.on_done(self)

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
                raw = await receive_within(self.layer, self.channel, self.edge_window)
            except asyncio.TimeoutError:
                logger.warning(
                    "the edge of %s sent nothing for %.1fs: treating the client as gone",
                    describe(self.scope),
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
                logger.warning(
                    "dropped a %s frame on %s: expected asgi or heartbeat",
                    type(frame).__name__,
                    self.channel,
                )
                continue
            for message in frame.messages:
                try:
                    check_client_message(self.scope["type"], message)
                except FrameError as exc:
                    logger.warning("dropped a message on %s: %s", self.channel, exc)
                    continue
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
        return encode_accept(self.conn_id, self.channel, self.heartbeat_interval, messages)

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


def describe(scope: Mapping[str, Any]) -> str:
    kind = "WebSocket" if scope.get("type") == "websocket" else scope.get("method", "HTTP")
    return f"{kind} {scope.get('path', '?')}"
