"""One connection on a Node: the application's ``receive()`` and ``send()``, over frames.

Rules of this file:

- The ``accept`` is written to Redis before the application's first line runs (the 503
  contract: a 503 means no application code ran), and only when it landed in time for the
  edge to hear it. A connect that asks for a claim (core/claims.py) is claimed instead, and its
  accept owed: it rides the first frame, or goes alone when the application waits for the edge
  or has sent nothing after ``ACCEPT_HOLD``. Then everything the application sends goes out in
  order, one at a time (``_aio.Turns``), as ``asgi`` frames on the edge's reply channel.
- An HTTP response is framed by node/framing.py: its start held for one loop turn so a body
  sent right after it travels in the same frame, bodies cut into frames of bounded size.
- Frames go to the edge with ``push`` (no capacity in Redis): flow control is end to end.
  At most ``CREDIT_WINDOW`` ``asgi`` frames are on their way without the edge's ``credit``
  for them; the application's ``send()`` waits for credit while the client is there.
- Frames from the edge are read once the edge can send them (after the accept) and something
  waits for them (``_start_reader``), from then on always (credit frames must get through to a
  sender that waits), awaited directly (no deadline per frame); the edge's own window bounds
  the inbox, and credit for its frames goes back as the application takes their messages. A
  WebSocket's are read from the accept on (a send-only application must hear the client left).
  Whether the edge is still there is the Node's business (_liveness.py: one heartbeat per edge
  process and interval): an edge silent for ``heartbeat_misses`` of its heartbeat intervals is
  gone, and ``edge_lost`` gives the application a disconnect.
- After a disconnect, HTTP sends are ignored and WebSocket sends raise ``ClientDisconnected``,
  as uvicorn does. A WebSocket the application closes or refuses gives its next ``receive()``
  what uvicorn's default implementations give: ``websocket.disconnect`` with the close's own
  code and reason, or code 1006 for a handshake refused (403 or a denial response); nothing
  the client sends after that reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected

from distributed_asgi._aio import Turns
from distributed_asgi._liveness import Liveness
from distributed_asgi.core.cycle import HTTPCycle, WebSocketCycle, WebSocketState, cycle_for
from distributed_asgi.core.flow import CreditWindow
from distributed_asgi.core.frames import (
    CREDIT_WINDOW,
    PICKUP_GRACE,
    Asgi,
    Connect,
    Credit,
    End,
    FrameError,
    Heartbeat,
    check_client_message,
    decode_frame,
    describe,
    encode,
    plain_message,
    plain_response_start,
)
from distributed_asgi.core.types import Message
from distributed_asgi.layers import GatewayLayer, LayerError
from distributed_asgi.node.acceptance import Acceptance, NodeClaims
from distributed_asgi.node.framing import ResponseFraming

__all__ = ["ACCEPT_LATEST", "NodeConnection"]

logger = logging.getLogger("distributed_asgi.node")

# How far past a connect's deadline its accept may land and the application still start. The
# edge listens PICKUP_GRACE past the deadline; half of it is left for the edge's own pop and
# for the two clocks' difference, so an accept the edge may have missed (it answered 503)
# never starts the application.
ACCEPT_LATEST = PICKUP_GRACE / 2
_ACCEPT_ERRORS: tuple[type[Exception], ...] = (LayerError,)  # the edge then answers 503
# uvicorn's 500 for an application that returned without starting its response.
_ERROR_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]


class NodeConnection:
    """One connection on the Node: the application's receive() and send(), over frames."""

    # fmt: off
    __slots__ = (
        "_arrived", "_reader", "_reading", "_response", "acceptance",
        "accepted", "beat_id", "channel", "conn_id", "cycle", "deadline", "disconnected",
        "edge_round", "edge_window", "failed", "flow", "heartbeat_interval", "inbox",
        "is_http", "layer", "liveness", "loop", "node_id", "on_done", "own_peer", "peer_key",
        "raised", "reply_channel", "route_key", "scope", "started", "taken", "turns",
    )
    # fmt: on

    def __init__(
        self,
        layer: GatewayLayer,
        connect: Connect,
        scope: dict[str, Any],
        *,
        heartbeat_interval: float,
        heartbeat_misses: int,
        on_done: Callable[[NodeConnection], None],
        liveness: Liveness[NodeConnection],
        peer: str | None,
        node_id: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        claims: NodeClaims | None = None,  # the Node's, when its layer can claim
    ) -> None:
        self.layer = layer
        # The Node's loop, kept: asyncio.get_running_loop() costs a getpid() system call.
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.liveness = liveness
        # The Node's liveness channel and its id (for the edge's logs), told in the accept.
        self.own_peer, self.node_id = peer, node_id
        # The edge process as the liveness watch names it; the id to beat when it beats each one.
        self.peer_key = connect.peer or connect.reply_channel
        self.beat_id = None if connect.peer else connect.conn_id
        self.edge_round = connect.round  # the edge's alive round at the connect
        self.heartbeat_interval = heartbeat_interval
        self.on_done = on_done
        self.route_key = ""  # the route channel it came from, for the Node's counters
        self.taken = time.monotonic()
        self.failed = False  # the application raised
        self.raised = False  # run() ended by an exception (a cancellation included)
        self.conn_id = connect.conn_id
        self.reply_channel = connect.reply_channel
        self.deadline = connect.deadline
        self.started = False  # the application was called
        self.scope = scope
        self.is_http = scope["type"] == "http"
        self.cycle: HTTPCycle | WebSocketCycle = cycle_for(scope)
        self.edge_window = connect.heartbeat * heartbeat_misses
        self.inbox: deque[Message] = deque(connect.messages)
        self.channel = ""
        self.disconnected = False  # the client (or the edge) is gone
        self._arrived: asyncio.Event | None = None  # made by the first receive() that waits
        self.flow = CreditWindow()  # frames to the edge, and the edge's frames read
        # Frames go out one at a time, in order (an application may send from two tasks).
        self.turns = Turns(self.loop)
        self._response = ResponseFraming(
            self.loop, is_head=self.is_http and scope.get("method") == "HEAD"
        )
        self.accepted = False
        self.acceptance = Acceptance(
            layer,
            connect,
            claims=claims if connect.claim and connect.peer else None,  # if the edge asks
            heartbeat=heartbeat_interval,
            peer=peer,
            node=node_id,
            liveness=liveness,
            turns=self.turns,
        )
        self._reader: asyncio.Task[None] | None = None
        self._reading = False  # the reader waits for the edge's next frame
        for message in connect.messages:
            self.cycle.on_receive(message)

    # -- the instance ------------------------------------------------------------------------

    async def run(self, application: Callable[..., Awaitable[None]]) -> None:
        # The clean-up awaits after the handler, never in it (compile_native.py says why).
        error: BaseException | None = None
        try:
            self.channel = await self.layer.new_channel("node")
            if await self._accept():
                self.started = True
                await application(self.scope, self.receive, self.send)
        except BaseException as exc:
            error = exc
            self.raised = True
            self.failed = self.started and not isinstance(exc, asyncio.CancelledError)
        self.liveness.detach(self, self.peer_key)
        self.acceptance.cancel()
        if self._reader is not None:
            self._reader.cancel()
        try:
            if self.started and not self._finished():
                await self._finish(error)
        except BaseException:
            self.raised = True
            raise
        finally:
            self.on_done(self)
        if error is not None:
            raise error

    def _finished(self) -> bool:
        """Whether the connection is over with nothing left for ``_finish`` to send."""
        return self._response.idle and (self.disconnected or self.cycle.finished)

    async def _accept(self) -> bool:
        """Tell the edge this Node has the connection; True when the application may start.

        Awaited before the application's first line, so that an edge answering 503 (no accept
        in time, or, for a claimed connection, its own claim got) knows no application code
        ran: a Node that dies after this is a 502.
        """
        if self.beat_id is None:
            # Listed to the edge from before the accept on: its alive rounds after the accept
            # then say whether this Node still holds the connection.
            self.liveness.attach(
                self, self.peer_key, self.edge_window, self.conn_id, after=self.edge_round
            )
        try:
            if not await self.acceptance.take(self.channel):
                return False
        except _ACCEPT_ERRORS as exc:
            logger.warning(
                "could not accept %s (%s: %s): not starting the application",
                describe(self.scope),
                type(exc).__name__,
                exc,
            )
            return False
        self.accepted = True
        late = time.time() - self.deadline
        if late > ACCEPT_LATEST:
            logger.warning(
                "accepted %s %.2fs past its pick-up deadline, too late for the edge to be sure "
                "to hear it: not starting the application",
                describe(self.scope),
                late,
            )
            error = f"not started: accepted too late ({late:.2f}s past the pick-up deadline)"
            with contextlib.suppress(LayerError):
                await self._send_frame(encode(End(self.conn_id, error)))
            return False
        self.acceptance.hold()
        # Nothing can come from the edge before it has the accept. Its connect was just heard.
        if self.beat_id is not None:
            self.liveness.attach(
                self,
                self.peer_key,
                self.edge_window,
                self.conn_id,
                after=None,
                beats_per_connection=True,
            )
        self.liveness.heard(self.peer_key)
        if not self.is_http:
            self._start_reader()
        return True

    def _start_reader(self) -> None:
        """Read the edge's frames from now on: started by the first wait for them (a
        ``receive()`` with nothing in the inbox, a send waiting for credit), so a request
        that came whole with its connect and is answered without waiting costs no reader.
        Frames that came before wait in the layer for it."""
        if self._reader is None and self.accepted and not self.disconnected:
            self._reader = self.loop.create_task(self._read_from_edge())

    async def _finish(self, error: BaseException | None) -> None:
        # A held http.response.start goes out before anything after it.
        await self._response.flush(self._send_messages)
        if self.disconnected or self.cycle.finished:
            return
        if isinstance(self.cycle, HTTPCycle) and not self.cycle.response_started:
            if error is None:
                logger.error("ASGI callable returned without starting response.")
            with contextlib.suppress(Exception):
                await self.send(
                    {"type": "http.response.start", "status": 500, "headers": _ERROR_HEADERS}
                )
                await self.send({"type": "http.response.body", "body": b"Internal Server Error"})
            return
        if error is None and isinstance(self.cycle, HTTPCycle):
            logger.error("ASGI callable returned without completing response.")
        text = None if error is None else f"{type(error).__name__}: {error}"
        with contextlib.suppress(LayerError):
            await self._send_frame(encode(End(self.conn_id, text)))

    # -- receive ---------------------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if isinstance(self.cycle, HTTPCycle) and self.cycle.response_complete:
                return {"type": "http.disconnect"}  # as uvicorn: nothing more to read
            if self.inbox:
                message = self.inbox.popleft()
                if len(self.inbox) < CREDIT_WINDOW // 2 and (frames := self.flow.due()):
                    await self._give_credit(frames)
                return message
            if isinstance(self.cycle, WebSocketCycle) and self.cycle.finished:
                # uvicorn's next message once its connection is lost after a close.
                return {"type": "websocket.disconnect", "code": 1005}
            if self.acceptance.owed:  # the edge sends nothing before it has the accept
                with contextlib.suppress(LayerError):
                    await self.acceptance.send_alone()
                continue
            self._start_reader()
            if self._arrived is None:
                self._arrived = asyncio.Event()
            self._arrived.clear()
            await self._arrived.wait()

    async def _read_from_edge(self) -> None:
        while True:
            self._reading = True
            try:
                raw: Message | None = await self.layer.receive(self.channel)
            except LayerError:  # the layer reconnects by itself; the window still counts
                raw = None
            finally:
                self._reading = False
            if raw is None:  # waited out after the handler, never in it (compile_native.py)
                await asyncio.sleep(0.1)
                continue
            try:
                frame = decode_frame(raw)
            except FrameError as exc:
                logger.warning("dropped a bad frame on %s: %s", self.channel, exc)
                continue
            self.liveness.heard(self.peer_key)
            if isinstance(frame, Credit):
                self.flow.granted(frame.frames)
                continue
            if isinstance(frame, Heartbeat):
                continue
            if not isinstance(frame, Asgi):
                logger.warning(
                    "dropped a %s frame on %s: expected asgi, credit or heartbeat",
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
            self.flow.consumed()
            if self.disconnected:
                return

    def edge_lost(self, window: float) -> None:
        """The liveness watch heard nothing from this connection's edge for ``window``."""
        if self.disconnected:
            return
        logger.warning(
            "the edge of %s sent nothing for %.1fs: treating the client as gone",
            describe(self.scope),
            window,
        )
        self._edge_gone()

    def edge_dropped(self) -> None:
        """The edge's alive frame did not list this connection: the edge let go of it (its
        frames were lost). Acted on only while waiting for a frame from it, as every frame
        the edge sent before letting go has been taken by then."""
        if self.disconnected or (self._reader is not None and not self._reading):
            return  # busy with a frame: the edge's next alive frame tells again
        logger.warning("the edge of %s no longer has it: the client is gone", describe(self.scope))
        self._edge_gone()

    def _edge_gone(self) -> None:
        """The application hears what uvicorn gives it when its client is lost."""
        if self._reader is not None:
            self._reader.cancel()
        self._deliver(
            {"type": "http.disconnect"}
            if self.is_http
            else {"type": "websocket.disconnect", "code": 1006}
        )

    def _deliver(self, message: Message) -> None:
        if isinstance(self.cycle, WebSocketCycle) and self.cycle.finished:
            return  # closed by the application: as uvicorn, nothing more from the client
        self.cycle.on_receive(message)
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            self.disconnected = True
        self.inbox.append(message)
        self._wake_receive()
        if self.disconnected:
            self.flow.release()  # a send waiting for credit gives up

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.disconnected:
            if self.is_http:
                return  # as uvicorn: sending to a gone client is a no-op for HTTP
            raise ClientDisconnected()
        cycle = self.cycle
        if isinstance(cycle, HTTPCycle):
            cycle.on_send(message)  # only a start, then bodies, get past it
            if message["type"] == "http.response.start":
                # Held for one loop turn: a body sent right after travels in the same frame.
                self._response.hold(plain_response_start(message), self._send_messages)
                return
            await self._response.body(message, self._send_messages)
            if cycle.response_complete:
                self._wake_receive()
            return
        before = cycle.state
        cycle.on_send(message)
        if cycle.finished:
            self._closed_by_application(message, before)
        await self._send_messages([plain_message(message)])

    def _closed_by_application(self, message: Message, before: WebSocketState) -> None:
        """Queue what uvicorn's default implementations queue when the application closes."""
        if before is WebSocketState.CONNECTED:
            disconnect = {
                "type": "websocket.disconnect",
                "code": int(message.get("code", 1000)),
                "reason": message.get("reason", "") or "",
            }
        else:  # refused: 403 from a close, or a denial response
            disconnect = {"type": "websocket.disconnect", "code": 1006}
        self.inbox.append(disconnect)
        self._wake_receive()

    def _wake_receive(self) -> None:
        if self._arrived is not None:
            self._arrived.set()

    async def _send_messages(self, messages: list[Message]) -> None:
        if not self.turns.take_now():
            await self.turns.wait()
        try:
            flow = self.flow
            if self.disconnected:
                return
            if not flow.take_now():
                self._start_reader()  # the edge is slower than the application: wait for it
                if not await flow.take(self._is_disconnected):
                    return
            await self.layer.push(self.reply_channel, self.acceptance.first_frame(messages))
        finally:
            self.turns.done()

    def _is_disconnected(self) -> bool:
        return self.disconnected

    async def _send_frame(self, frame: Message) -> None:
        if not self.turns.take_now():
            await self.turns.wait()
        try:
            await self.acceptance.flush()  # the edge takes nothing before the accept
            await self.layer.push(self.reply_channel, frame)
        finally:
            self.turns.done()

    async def _give_credit(self, frames: int) -> None:
        with contextlib.suppress(LayerError):  # lost: the edge's liveness judges the rest
            await self.layer.push(self.reply_channel, encode(Credit(self.conn_id, frames)))
