"""One client connection at the edge: uvicorn's request cycle, with a Node instead of an app.

Rules of this file:

- ``EdgeConnection.run`` is the whole life of one connection: pick-up (``connect`` out, an
  ``accept`` back within the pickup timeout, else an edge answer), then two pumps until the
  application's side is finished: client ``receive()`` -> the Node's channel, and the reply
  channel -> client ``send()``.
- Everything handed to the client goes through the connection's cycle (core/cycle.py), whether it
  came from the Node or is the edge's own answer (404, 413, 502, 503), so nothing is sent after
  the response is complete.
- The edge never waits for a client before a Node is asked: a body already there travels with
  the ``connect``, the rest is pumped after the accept.
- Every Redis call made for a connection has a deadline from that connection's own budget
  (``_within``): the pick-up (the connect's send and the wait for an accept) has the pickup
  timeout, a frame to the Node the Node's heartbeat window, a heartbeat its interval. Redis
  that stops answering (a partition: nothing refused, nothing returned) then costs each
  request its own budget at most, never redis-py's socket timeout, and no request waits
  behind another one's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import logging
import secrets
import sys
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ResponseError

from distributed_asgi.core.cycle import HTTPCycle, WebSocketCycle, WebSocketState, cycle_for
from distributed_asgi.core.frames import (
    PICKUP_GRACE,
    Accept,
    Asgi,
    Connect,
    End,
    FrameError,
    Heartbeat,
    decode_frame,
    encode,
)
from distributed_asgi.core.types import Message, Receive, Scope, Send
from distributed_asgi.layers import ChannelFull
from distributed_asgi.layers.shard import CONNECTION_ERRORS

if TYPE_CHECKING:
    from distributed_asgi.edge.distributor import Distributor

__all__ = ["EdgeConnection", "RemoteApplicationError", "describe", "refuse"]

logger = logging.getLogger("distributed_asgi.distributor")


# ChannelFull on a connection's channel is flow control (the other side is slower): retry with
# a short, growing pause rather than fail.
_FULL_BACKOFF_START = 0.002
_FULL_BACKOFF_MAX = 0.1


# Why a connection's pumps stopped early (``_finish``), as an outcome for the metrics.
_STOP_OUTCOMES = {"client disconnected": "client_gone", "redis": "redis_down"}

# A WebSocket denial response is handed to the server only once its body is complete (start
# and every chunk back to back): uvicorn's legacy ``websockets`` implementation answers the
# handshake as soon as the loop turns after the start, and loses body chunks that come later.
# Past this many body bytes the rest streams (that implementation then cuts the body there).
DENIAL_HOLD_LIMIT = 1024 * 1024

_T = TypeVar("_T")


class _DeadlineExceeded(Exception):
    """A Redis call did not finish within what the connection's budget left for it."""


if sys.version_info >= (3, 11):

    async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
        """``await awaitable``, or ``_DeadlineExceeded`` after ``seconds``; a timeout raised
        inside (redis-py's own) passes through unchanged. A cancelled command's connection is
        discarded by the layer and redis-py, never reused with its reply unread."""
        try:
            async with asyncio.timeout(max(0.0, seconds)) as scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise _DeadlineExceeded from None
            raise

else:  # pragma: no cover - Python 3.10

    async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
        try:
            return await asyncio.wait_for(awaitable, max(0.0, seconds))
        except asyncio.TimeoutError:
            raise _DeadlineExceeded from None


# A Redis call for a connection failed or did not answer in time.
_REDIS_FAILURES: tuple[type[Exception], ...] = (_DeadlineExceeded, *CONNECTION_ERRORS)


# Connection ids only need to be unique (they name connections in frames and logs): a random
# per-process part and a counter, without a getrandom() call per request.
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def _next_conn_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


class RemoteApplicationError(Exception):
    """The application raised on the Node; raised at the edge so its server acts as it would
    for a local exception (500 before the response started, a closed connection after)."""


class EdgeConnection:
    """One client connection at the edge: uvicorn's cycle, with a Node instead of an app."""

    def __init__(
        self, distributor: Distributor, scope: Scope, receive: Receive, send: Send, key: str
    ) -> None:
        self.distributor = distributor
        self.layer = distributor.layer
        self.scope = scope
        self.receive = receive
        self.client_send = send
        self.key = key
        self.conn_id = _next_conn_id()
        self.is_http = scope["type"] == "http"
        self.cycle: HTTPCycle | WebSocketCycle = cycle_for(scope)
        self.node_channel: str | None = None
        self.reply_channel = ""
        self.arrived = time.monotonic()
        self.last_sent = self.arrived
        self.body_size = 0
        self.disconnected = False
        self.node_told_disconnect = False
        self.node_ended = False
        # How long the Node may stay silent (set at the accept): also the deadline of a frame
        # sent to it.
        self.window = distributor.heartbeat_interval * distributor.heartbeat_misses
        # A WebSocket denial response being collected (start, body chunks) before delivery.
        self._held: list[Message] | None = None
        self._held_size = 0
        self._connect_queued = False  # Redis confirmed the connect's send
        self._stop: asyncio.Future[str] | None = None
        # For the metrics: what the client was answered and why (see metrics.py's outcomes).
        self.status: int | None = None
        self.outcome = "served"
        self.pickup_wait: float | None = None

    async def run(self) -> None:
        if self.is_http and self._declared_length() > self.distributor.max_body_size:
            self.outcome = "too_large"
            await self._respond(413)
            return
        first: asyncio.Future[Message]
        if self._expects_no_body():
            # websocket.connect, or a request without a body: the server answers at once.
            first = asyncio.get_running_loop().create_future()
            first.set_result(await self.receive())
        else:
            first = asyncio.ensure_future(self.receive())
            # One turn of the loop: enough for a body that is already here to come back with
            # the connect frame, never a wait for a slow client before a Node is even asked.
            await asyncio.sleep(0)
        initial: list[Message] = []
        if first.done():
            message = first.result()
            if not self._check_body(message):
                self.outcome = "too_large"
                await self._respond(413)
                return
            initial.append(message)
            self._note_client_message(message)
        try:
            accept = await self._pick_up(initial)
        except BaseException:
            first.cancel()
            raise
        if accept is None:
            first.cancel()
            return
        self.node_channel = accept.channel
        self.window = accept.heartbeat * self.distributor.heartbeat_misses
        if accept.messages:
            try:
                finished = await self._to_client_all(accept.messages)
            except BaseException:
                first.cancel()
                raise
            if finished:  # a whole short response came with the accept: nothing to pump
                first.cancel()
                return
        self.distributor.register(self)
        self._stop = asyncio.get_running_loop().create_future()
        pump = asyncio.ensure_future(self._client_to_node(None if initial else first))
        try:
            await self._node_to_client(self.window)
        finally:
            pump.cancel()
            self.distributor.unregister(self)
            if self._stop.done() and self.outcome == "served":
                self.outcome = _STOP_OUTCOMES.get(self._stop.result(), self.outcome)
            if not (self.cycle.finished or self.node_told_disconnect or self.node_ended):
                # The edge is leaving (client gone, server shutting down): tell the Node so
                # the application sees a disconnect instead of waiting for the heartbeat window.
                self.node_told_disconnect = True
                self.distributor.spawn(
                    self._send_to_node([self._disconnect_message()], retry=False)
                )

    # -- pick-up -------------------------------------------------------------------------------

    async def _pick_up(self, initial: list[Message]) -> Accept | None:
        distributor = self.distributor
        try:
            # One deadline (one timer) for the whole pick-up: the connect's send and the wait
            # for an accept. A send still unconfirmed at the connect's own deadline cannot
            # start anything any more (a Node drops it), so both end a grace after it.
            return await _within(
                distributor.pickup_timeout + PICKUP_GRACE, self._connect_and_wait(initial)
            )
        except _DeadlineExceeded:
            if not self._connect_queued:
                logger.warning(
                    "Redis did not take the connect of %s for %r within %.1fs: refusing it",
                    describe(self.scope),
                    self.key,
                    distributor.pickup_timeout,
                )
                await self._refuse_pick_up("redis_down", 503)
                return None
            logger.warning(
                "no Node took %s on %r within %.1fs",
                describe(self.scope),
                self.key,
                distributor.pickup_timeout,
            )
            await self._refuse_pick_up("no_worker", distributor.no_worker_status)
            return None
        except ChannelFull:
            logger.warning("route channel %r is full: refusing %s", self.key, describe(self.scope))
            await self._refuse_pick_up("capacity", distributor.no_worker_status)
            return None
        except CONNECTION_ERRORS as exc:
            logger.warning("cannot reach Redis (%s): refusing %s", exc, describe(self.scope))
            await self._refuse_pick_up("redis_down", 503)
            return None
        except ResponseError as exc:
            # Redis refused the write, e.g. WRONGTYPE: something else was put in the route
            # channel's key. Nothing was queued; refuse like a full channel, naming the key.
            logger.error("route channel %r refused the connect: %s", self.key, exc)
            await self._refuse_pick_up("capacity", 503)
            return None

    async def _connect_and_wait(self, initial: list[Message]) -> Accept:
        distributor = self.distributor
        self.reply_channel = await self.layer.new_channel("edge")
        frame = encode(
            Connect(
                self.conn_id,
                self.scope,
                self.reply_channel,
                time.time() + distributor.pickup_timeout,
                distributor.heartbeat_interval,
                initial,
            )
        )
        sent = time.monotonic()
        await self.layer.send(self.key, frame)
        self._connect_queued = True
        while True:
            frame_in = self._decode(await self.layer.receive(self.reply_channel))
            if isinstance(frame_in, Accept):
                self.pickup_wait = time.monotonic() - sent
                return frame_in
            if frame_in is not None:
                logger.warning(
                    "dropped a %s frame on %s: expected an accept",
                    type(frame_in).__name__,
                    self.reply_channel,
                )

    async def _refuse_pick_up(self, outcome: str, status: int) -> None:
        self.outcome = outcome
        await self._respond(status, retry_after=True)

    # -- client -> Node ----------------------------------------------------------------------

    async def _client_to_node(self, first: asyncio.Future[Message] | None) -> None:
        try:
            message = await first if first is not None else await self.receive()
            while True:
                if not self._check_body(message):
                    await self._too_large()
                    return
                self._note_client_message(message)
                await self._send_to_node([message])
                if self.disconnected:
                    self._finish("client disconnected")
                    return
                # After a complete body this waits for the disconnect (uvicorn's receive()
                # returns only that); the pump is cancelled when the response is done.
                message = await self.receive()
        except _REDIS_FAILURES as exc:
            logger.warning(
                "lost Redis while forwarding %s: %s",
                describe(self.scope),
                str(exc) or f"no answer within {self.window:.1f}s",
            )
            self._finish("redis")

    def _note_client_message(self, message: Message) -> None:
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            self.disconnected = True
            self.node_told_disconnect = True

    def _check_body(self, message: Message) -> bool:
        if message["type"] == "http.request":
            self.body_size += len(message.get("body", b""))
            return self.body_size <= self.distributor.max_body_size
        return True

    async def _too_large(self) -> None:
        await self._send_to_node([{"type": "http.disconnect"}], retry=False)
        self.node_told_disconnect = True
        self.outcome = "too_large"
        if not self.cycle.started:
            await self._respond(413)
        self._finish("request body too large")

    async def _send_to_node(self, messages: list[Message], *, retry: bool = True) -> None:
        assert self.node_channel is not None
        frame = encode(Asgi(self.conn_id, messages))
        delay = _FULL_BACKOFF_START
        while True:
            try:
                # A Redis that cannot take a frame within the Node's window has lost this
                # connection as surely as a silent Node.
                await _within(self.window, self.layer.send(self.node_channel, frame))
            except ChannelFull:
                if not retry:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _FULL_BACKOFF_MAX)
                continue
            except _REDIS_FAILURES:
                if not retry:
                    return
                raise
            self.last_sent = time.monotonic()
            return

    async def send_heartbeat(self) -> None:
        if self.node_channel is None:
            return
        self.last_sent = time.monotonic()
        # Bounded by the interval: one stuck heartbeat must not hold up the next round's.
        with contextlib.suppress(ChannelFull, _DeadlineExceeded, *CONNECTION_ERRORS):
            await _within(
                self.distributor.heartbeat_interval,
                self.layer.send(self.node_channel, encode(Heartbeat(self.conn_id))),
            )

    # -- Node -> client ------------------------------------------------------------------------

    async def _node_to_client(self, window: float) -> None:
        assert self._stop is not None
        while not self.cycle.finished:
            receiving = asyncio.ensure_future(self.layer.receive(self.reply_channel))
            waiting: set[asyncio.Future[Any]] = {receiving, self._stop}
            timeout, expired = self._next_deadline(window)
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if receiving not in done:
                receiving.cancel()
                if self._stop.done():
                    if self._stop.result() == "redis":
                        await self._upstream_failed()
                    return
                if expired is not None:
                    await self._timed_out(expired)
                else:
                    await self._node_lost(window)
                return
            frame = self._decode(receiving.result())
            if isinstance(frame, Asgi):
                if await self._to_client_all(frame.messages):
                    return
            elif isinstance(frame, End):
                self.node_ended = True
                if frame.error is None:
                    await self._release_held()  # the application ended its denial early
                else:
                    raise RemoteApplicationError(
                        f"the application raised on the Node for {describe(self.scope)}: "
                        f"{frame.error}"
                    )
                return
            elif frame is not None and not isinstance(frame, Heartbeat):
                logger.warning(
                    "dropped an unexpected %s frame on %s (a running connection)",
                    type(frame).__name__,
                    self.reply_channel,
                )

    async def _to_client_all(self, messages: list[Message]) -> bool:
        """Pass messages on to the client; True once the application's side is finished."""
        for message in messages:
            if self.cycle.finished:  # e.g. the edge answered 413 meanwhile
                return True
            await self._to_client(message)
        return self.cycle.finished

    async def _to_client(self, message: Message) -> None:
        try:
            self.cycle.on_send(message)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            # The Node checks the same rules before sending, so this is a foreign or corrupt
            # frame: end the connection rather than pass on something the server would reject.
            raise RemoteApplicationError(f"invalid message from the Node: {exc}") from None
        kind = message["type"]
        if kind == "http.response.start" or kind == "websocket.http.response.start":
            self.status = int(message["status"])
        elif kind == "websocket.accept":
            self.status = 101
        if kind == "websocket.http.response.start":
            self._held, self._held_size = [message], 0
            return
        if self._held is not None:
            self._held.append(message)
            self._held_size += len(message.get("body", b""))
            if message.get("more_body", False) and self._held_size <= DENIAL_HOLD_LIMIT:
                return
            await self._release_held()
            return
        await self.client_send(message)

    async def _release_held(self) -> None:
        """Hand the denial response collected so far to the server, back to back (no await
        in between yields to the server's handshake)."""
        held, self._held = self._held, None
        for message in held or ():
            await self.client_send(message)

    @property
    def _client_saw_response(self) -> bool:
        """Something of the response reached the server (a held denial has not)."""
        return self.cycle.started and self._held is None

    def _next_deadline(self, window: float) -> tuple[float, str | None]:
        """How long to wait for the Node's next frame, and which HTTP timeout (if any) ends
        that wait rather than the heartbeat window."""
        if not self.is_http:
            return window, None
        timeout, expired = window, None
        limits = [("total", self.distributor.total_timeout)]
        if not self.cycle.started:
            limits.append(("first byte", self.distributor.first_byte_timeout))
        elapsed = time.monotonic() - self.arrived
        for name, limit in limits:
            if limit is not None and limit - elapsed <= timeout:
                timeout, expired = max(0.0, limit - elapsed), name
        return timeout, expired

    async def _timed_out(self, which: str) -> None:
        limit = (
            self.distributor.total_timeout
            if which == "total"
            else self.distributor.first_byte_timeout
        )
        logger.warning(
            "%s timeout (%.1fs) for %s: %s",
            which,
            limit,
            describe(self.scope),
            "answering 504" if not self.cycle.started else "closing the connection",
        )
        # The application hears what it would hear from uvicorn if the client left.
        self.outcome = "timeout"
        self.node_told_disconnect = True
        self.distributor.spawn(self._send_to_node([self._disconnect_message()], retry=False))
        if not self.cycle.started:
            await self._respond(504)
        # A response under way: returning unfinished makes the server close the connection.

    async def _node_lost(self, window: float) -> None:
        logger.warning(
            "the Node serving %s sent nothing for %.1fs: giving up on it",
            describe(self.scope),
            window,
        )
        self.outcome = "node_lost"
        await self._upstream_failed()

    async def _upstream_failed(self) -> None:
        """The Node or Redis is gone mid-connection: 502 while the client has seen nothing."""
        if not self._client_saw_response:
            self._held = None
            await self._respond(502)
        elif (
            isinstance(self.cycle, WebSocketCycle) and self.cycle.state is WebSocketState.CONNECTED
        ):
            await self.client_send({"type": "websocket.close", "code": 1011})
        # An HTTP response already under way: returning unfinished makes the server close it.

    def _finish(self, reason: str) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(reason)

    # -- helpers ------------------------------------------------------------------------------

    def _decode(self, raw: Message) -> Any:
        try:
            return decode_frame(raw)
        except FrameError as exc:
            logger.warning("dropped a bad frame on %s: %s", self.reply_channel, exc)
            return None

    def _expects_no_body(self) -> bool:
        if not self.is_http:
            return True
        for name, value in self.scope.get("headers", ()):
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return False
        return True

    def _declared_length(self) -> int:
        for name, value in self.scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    def _disconnect_message(self) -> Message:
        if self.is_http:
            return {"type": "http.disconnect"}
        return {"type": "websocket.disconnect", "code": 1006}

    async def _respond(self, status: int, *, retry_after: bool = False) -> None:
        headers = []
        if retry_after:
            headers.append((b"retry-after", str(self.distributor.retry_after).encode()))
        if status == 413:
            # The rest of the body is unread: close rather than keep a half-read connection
            # alive (RFC 9110 15.5.14), which also spares the server from draining it.
            headers.append((b"connection", b"close"))
        # An edge answer replaces whatever was under way; it goes through a fresh cycle so
        # that anything the Node still sends afterwards is recognised as too late.
        self.status = status
        self.cycle = cycle_for(self.scope)
        for message in _refusal(self.scope, status, headers):
            self.cycle.on_send(message)
            await self.client_send(message)


async def refuse(
    scope: Scope, send: Send, status: int, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    for message in _refusal(scope, status, extra_headers or []):
        await send(message)


def _refusal(scope: Scope, status: int, extra_headers: list[tuple[bytes, bytes]]) -> list[Message]:
    """An answer from the edge itself: a plain-text error for HTTP; for a WebSocket handshake a
    denial response where the server offers one, else a close (the server sends 403)."""
    body = http.HTTPStatus(status).phrase.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    if scope["type"] == "http":
        return [
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body},
        ]
    if "websocket.http.response" in (scope.get("extensions") or {}):
        return [
            {"type": "websocket.http.response.start", "status": status, "headers": headers},
            {"type": "websocket.http.response.body", "body": body},
        ]
    return [{"type": "websocket.close", "code": 1013}]


def describe(scope: Scope) -> str:
    kind = "WebSocket" if scope["type"] == "websocket" else scope.get("method", "HTTP")
    return f"{kind} {scope.get('path', '?')}"
