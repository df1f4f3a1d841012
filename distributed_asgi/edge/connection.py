"""One client connection at the edge: uvicorn's request cycle, with a Node instead of an app.

Rules of this file:

- ``EdgeConnection.run`` is the whole life of one connection: pick-up (edge/pickup.py: a
  ``connect`` out, an ``accept`` back within the pickup timeout, else an edge answer), then two
  pumps until the application's side is finished: client ``receive()`` -> the Node's channel,
  and the reply channel -> client ``send()``.
- Everything handed to the client goes through the connection's ``ClientSide`` (edge/client.py)
  and its cycle, whether it came from the Node or is the edge's own answer (413, 502, 503,
  504), so nothing is sent after the response is complete.
- The edge never waits for a client before a Node is asked: a body already there travels with
  the ``connect``, the rest is pumped after the accept, pushed (no capacity in Redis) within
  the Node's credit (core/frames.py ``CREDIT_WINDOW``), given back to it as the client takes.
- Every layer call made for a connection has a deadline from its own budget: the pick-up the
  pickup timeout, a frame to the Node the Node's heartbeat window. A Redis that stops
  answering (a partition) costs each request its own budget at most, never the client
  library's socket timeout, and no request waits behind another one's call.
- Whether the Node is still there is the edge's business (_liveness.py: one beat per Node
  process and interval; ``peer_lost``, ``peer_dropped``). The pick-up and each wait for the
  Node's next frame run under the connection's one timer (``_aio.Deadline``): the HTTP
  timeouts, or now when a pump or the liveness watch ends it. No task per frame.
- Two facts say who still has to hear what: ``disconnected`` (the client is gone: its
  disconnect came in) and ``node_done`` (the Node needs nothing more: it ended the connection,
  or has been told the client is gone). A connection that returns with neither the cycle
  finished nor ``node_done`` tells the Node, so the application never waits for the heartbeat
  window to learn the client left.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from distributed_asgi._aio import Deadline
from distributed_asgi.core.claims import NodeHolder
from distributed_asgi.core.frames import Accept, Asgi, Credit, End, Heartbeat, describe
from distributed_asgi.core.names import new_connection_id
from distributed_asgi.core.outcomes import HTTPTimeout, Outcome
from distributed_asgi.core.types import Message, Receive, Scope, Send
from distributed_asgi.edge.client import ClientSide, first_message
from distributed_asgi.edge.node_link import LAYER_FAILURES, NodeLink, decode_logged
from distributed_asgi.edge.pickup import PickUp, Refused
from distributed_asgi.edge.refusal import RemoteApplicationError, announced_body
from distributed_asgi.edge.retry import log_retry, may_retry
from distributed_asgi.edge.settings import ConnectionRegistry, EdgeSettings
from distributed_asgi.layers import GatewayLayer

__all__ = ["EdgeConnection", "RemoteApplicationError"]

logger = logging.getLogger("distributed_asgi.distributor")


# How long a response to a whole request may take before the client's disconnect is watched.
WATCH_DISCONNECT_AFTER = 0.05


def _cancel(future: asyncio.Future[Message] | None) -> None:
    if future is not None:
        future.cancel()


class EdgeConnection:
    """One client connection at the edge: uvicorn's cycle, with a Node instead of an app."""

    deadline: Deadline  # made by run(), in the task whose waits it bounds

    def __init__(
        self,
        layer: GatewayLayer,
        settings: EdgeSettings,
        registry: ConnectionRegistry,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: str,
    ) -> None:
        self.layer = layer
        self.settings = settings
        self.registry = registry
        self.scope = scope
        self.receive = receive
        self.client_send = send
        self.key = key
        self.is_http = scope["type"] == "http"
        self.arrived = time.monotonic()
        self.body_size = 0
        self.disconnected = False  # the client is gone: its disconnect message came in
        self.whole = False  # the whole request came with the connect (a retry can resend it)
        self.retried = 0  # times sent to another Node after its Node was lost (edge/retry.py)
        # For the metrics: what the client was answered and why.
        self.outcome = Outcome.SERVED
        self._attempt()

    @property
    def status(self) -> int | None:
        """What the client was answered (None: nothing yet), for the metrics."""
        return self.client.status

    @status.setter
    def status(self, status: int | None) -> None:
        self.client.status = status

    def _attempt(self) -> None:
        """The state of one attempt at having a Node serve the connection."""
        self.conn_id = new_connection_id()
        self.client = ClientSide(self.scope, self.client_send, self.settings)
        self.pickup = PickUp(self.layer, self.settings, self.key, self.conn_id, self.scope)
        self.node_channel: str | None = None
        self.link: NodeLink | None = None  # frames to the Node (see _link)
        # The Node process, as the edge's liveness watch names it (set at the accept), and the
        # connection id to heartbeat when that Node beats per connection (None: it does not).
        self.peer_key = ""
        self.node_name = ""
        self.beat_id: str | None = None
        self.node_round: int | None = None  # the Node's alive round at the accept
        self.node_done = False  # the Node ended the connection or was told the client is gone
        # How long the Node may stay silent (set at the accept): also the deadline of a frame
        # sent to it.
        self.window = self.settings.window
        # Set when a pump or the liveness watch ends the connection early, with the outcome;
        # the receive under way then ends at once (``Deadline.expire``).
        self._stop: Outcome | None = None
        self._retrying = False  # the Node was lost and the request goes to another one
        self._client_pump: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.deadline = Deadline()  # bounds this task's waits (see the rules above)
        await self._run()
        if self.retried and self.outcome is Outcome.SERVED:
            self.outcome = Outcome.RETRIED

    async def _run(self) -> None:
        body, length = announced_body(self.scope) if self.is_http else (False, 0)
        if length > self.settings.max_body_size:
            self.outcome = Outcome.TOO_LARGE
            await self.client.respond(413)
            return
        message, first = await first_message(self.receive, body)
        initial: list[Message] = []
        if message is not None:
            first = None
            if not self._check_body(message):
                self.outcome = Outcome.TOO_LARGE
                await self.client.respond(413)
                return
            initial.append(message)
            self._note_client_message(message)
        # A whole request came with the connect: only the client's disconnect can follow.
        self.whole = self.is_http and bool(initial) and not initial[-1].get("more_body", False)
        while True:
            try:
                self.pickup.peer = await self.registry.peer_channel()
                self.pickup.round = self.registry.holding(self.conn_id)
                # A whole request is claimed (core/claims.py): its accept comes with the response.
                self.pickup.claims = self.registry.claims if self.whole else None
                answer = await self.pickup.run(initial, self.deadline)
                if isinstance(answer, Refused):
                    await self._refused(answer)
                    _cancel(first)
                    return
                accept = await self._held_by(answer) if isinstance(answer, NodeHolder) else answer
                if accept is None:  # the Node was lost, or a timeout answered the client
                    self.registry.unregister(self)
                    if not self._retrying:
                        _cancel(first)
                        return
                elif await self._accepted(accept):  # a whole short response came with it
                    self.registry.unregister(self)
                    _cancel(first)
                    return
            except BaseException:
                _cancel(first)
                self.registry.unregister(self)
                raise
            finally:
                self.registry.release(self.conn_id)  # registered (or refused) by now
            if accept is not None:
                await self._pump(first, watch_later=self.whole)
                if not self._retrying:
                    return
            self._retry()

    def _retry(self) -> None:
        self.retried += 1
        self.registry.retried(self.key)
        log_retry(self.scope, self.retried, self.settings, self.node_name)
        self._attempt()

    async def _refused(self, refused: Refused) -> None:
        if self.retried:
            # The request ran on the Node that was lost: a 503 would say it never ran.
            self.outcome = Outcome.NODE_LOST
            await self.client.respond(502)
            return
        self.outcome = refused.outcome
        await self.client.respond(refused.status, retry_after=True)

    async def _held_by(self, holder: NodeHolder) -> Accept | None:
        """A Node claimed the connection but sent nothing by the pick-up deadline: watch it as
        after an accept, and wait for its accept; None: the Node lost, or an HTTP timeout."""
        self._watch_node(holder.peer, None, holder.node, holder.round, holder.heartbeat)
        self.registry.register(self)
        logger.warning(
            "Node %s holds %s but sent nothing by the pick-up deadline: waiting for it",
            self.node_name,
            describe(self.scope),
        )
        answer = await self.pickup.accept_from_holder(self.deadline, self._deadline, self._heard)
        if isinstance(answer, Accept):
            return answer
        if self._stop is None and answer is not None:
            await self._timed_out(answer)
            return None
        await self._node_failed()
        if self._stop is not None and self.outcome is Outcome.SERVED and not self._retrying:
            self.outcome = self._stop
        return None

    def _watch_node(
        self, peer_key: str, beat_id: str | None, node: str | None, round: int | None, hb: float
    ) -> None:
        """The Node the liveness watch judges this connection by, from its accept or claim."""
        self.peer_key, self.beat_id, self.node_round = peer_key, beat_id, round
        self.node_name = node or peer_key  # for the logs
        self.window = hb * self.settings.heartbeat_misses

    async def _accepted(self, accept: Accept) -> bool:
        """Pin the connection to the Node; True when the accept already finished it."""
        self.node_channel = accept.channel
        peer_key, beat_id = (accept.peer, None) if accept.peer else (accept.channel, self.conn_id)
        self._watch_node(peer_key, beat_id, accept.node, accept.round, accept.heartbeat)
        messages = accept.messages
        if self.client.completed_by(messages):
            # The whole response came with the accept: the Node needs nothing more from this
            # connection, so there is nothing of it for the liveness watch to judge.
            return await self.client.pass_on(messages)
        self.registry.register(self)  # before anything awaits: always listed to a Node
        return bool(messages) and await self.client.pass_on(messages)

    async def _pump(self, first: asyncio.Future[Message] | None, *, watch_later: bool) -> None:
        link = self._link()
        assert link is not None, "pumped once accepted"
        # Only the client's disconnect can come after a whole request: watched for once the
        # response takes a while (most are done by then), which spares a task per request.
        loop = asyncio.get_running_loop()
        later = watch_later and loop.call_later(WATCH_DISCONNECT_AFTER, self._pump_client, first)
        if not later:
            self._pump_client(first)
        try:
            await self._node_to_client(link)
        finally:
            if later:
                later.cancel()
            if self._client_pump is not None:
                self._client_pump.cancel()
            self.registry.unregister(self)
            if self._stop is not None and self.outcome is Outcome.SERVED and not self._retrying:
                self.outcome = self._stop
            if not (self.client.cycle.finished or self.node_done):
                # The edge is leaving (client gone, server shutting down): tell the Node so
                # the application sees a disconnect instead of waiting for the heartbeat window.
                self._tell_node_gone()

    # -- client -> Node ----------------------------------------------------------------------

    def _pump_client(self, first: asyncio.Future[Message] | None) -> None:
        assert self.link is not None
        self._client_pump = asyncio.ensure_future(self._client_to_node(first, self.link))

    async def _client_to_node(self, first: asyncio.Future[Message] | None, link: NodeLink) -> None:
        try:
            message = await first if first is not None else await self.receive()
            while True:
                if not self._check_body(message):
                    await self._too_large(link)
                    return
                self._note_client_message(message)
                await link.send([message])
                if self.disconnected:
                    self._finish(Outcome.CLIENT_GONE)
                    return
                # After a complete body this waits for the disconnect (uvicorn's receive()
                # returns only that); the pump is cancelled when the response is done.
                message = await self.receive()
        except LAYER_FAILURES as exc:
            logger.warning(
                "lost Redis while forwarding %s: %s",
                describe(self.scope),
                str(exc) or f"no answer within {self.window:.1f}s",
            )
            self._finish(Outcome.REDIS_DOWN)

    def _note_client_message(self, message: Message) -> None:
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            # It goes to the Node next (with the connect, or by the pump).
            self.disconnected = self.node_done = True

    def _check_body(self, message: Message) -> bool:
        if message["type"] == "http.request":
            self.body_size += len(message.get("body", b""))
            return self.body_size <= self.settings.max_body_size
        return True

    async def _too_large(self, link: NodeLink) -> None:
        self.node_done = True
        await link.send([{"type": "http.disconnect"}], retry=False)
        self.outcome = Outcome.TOO_LARGE
        if not self.client.cycle.started:
            await self.client.respond(413)
        self._finish(Outcome.TOO_LARGE)

    def _tell_node_gone(self) -> None:
        """In the background: the connection may be returning (the server's task ends), or
        be pinned to another Node by a retry before this runs, so the frame is made now."""
        self.node_done = True
        link = self._link()
        if link is not None:  # else claimed, not accepted: the edge's next alive frame tells
            self.registry.spawn(link.last_word())

    def _link(self) -> NodeLink | None:
        """The frames to the Node, once its accept named its channel (made by the first use:
        a response that came whole with the accept needs none)."""
        if self.link is None and self.node_channel is not None:
            self.link = NodeLink(
                self.layer, self.conn_id, self.node_channel, self.window, self.is_http
            )
        return self.link

    # -- Node -> client ------------------------------------------------------------------------

    async def _node_to_client(self, link: NodeLink) -> None:
        deadline = self.deadline
        flow = link.flow
        while not self.client.cycle.finished and not self._stopped():
            when, expired = self._deadline()
            raw: Message | None
            try:
                raw = await deadline.wait(self.layer.receive(self.pickup.reply_channel), when)
            except TimeoutError:
                if not deadline.expired():
                    raise  # not ours: the layer's own
                raw = None  # answered after the handler, never in it (compile_native.py)
            if raw is None:
                if self._stop is None and expired is not None:
                    await self._timed_out(expired)
                    return
                break
            self.registry.heard(self.peer_key)
            frame = decode_logged(raw, self.pickup.reply_channel)
            if isinstance(frame, Asgi):
                if await self.client.pass_on(frame.messages):
                    return
                flow.consumed()
                if frames := flow.due():
                    await link.give_credit(frames)
            elif isinstance(frame, Credit):
                flow.granted(frame.frames)
            elif isinstance(frame, End):
                self.node_done = True
                if frame.error is None:
                    await self.client.release_held()  # the application ended its denial early
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
                    self.pickup.reply_channel,
                )
        await self._node_failed()

    async def _node_failed(self) -> None:
        """After a pump or the liveness watch ended the wait for the Node: retry the request
        elsewhere when that is safe, else tell the client (502, or 1011)."""
        if not self.client.cycle.finished and self._stop in (Outcome.REDIS_DOWN, Outcome.NODE_LOST):
            self._retrying = self._stop is Outcome.NODE_LOST and may_retry(
                self.settings,
                self.scope,
                retried=self.retried,
                whole=self.whole,
                response_started=self.client.cycle.started,
                client_gone=self.disconnected,
            )
            if not self._retrying:
                await self.client.upstream_failed()

    def _stopped(self) -> bool:
        # A call, not ``self._stop is None`` in the loop's condition: mypy would narrow
        # ``_stop`` to None in the loop, and compiled code would trust that after each wait.
        return self._stop is not None

    def _heard(self) -> None:
        self.registry.heard(self.peer_key)

    def _deadline(self) -> tuple[float | None, HTTPTimeout | None]:
        """When (loop time) an HTTP timeout ends the wait for the Node's next frame, and which
        (None: none does; the Node's silence is the liveness watch's to judge)."""
        if not self.is_http:
            return None, None
        elapsed = time.monotonic() - self.arrived
        timeout, which = self.settings.next_deadline(math.inf, elapsed, self.client.cycle.started)
        return None if which is None else asyncio.get_running_loop().time() + timeout, which

    async def _timed_out(self, which: HTTPTimeout) -> None:
        logger.warning(
            "%s timeout (%.1fs) for %s: %s",
            which.value,
            self.settings.limit(which),
            describe(self.scope),
            "answering 504" if not self.client.cycle.started else "closing the connection",
        )
        # The application hears what it would hear from uvicorn if the client left.
        self.outcome = Outcome.TIMEOUT
        self._tell_node_gone()
        if not self.client.cycle.started:
            await self.client.respond(504)
        # A response under way: returning unfinished makes the server close the connection.

    def peer_lost(self, window: float) -> None:
        """The liveness watch heard nothing from this connection's Node for ``window``."""
        logger.warning(
            "the Node serving %s sent nothing for %.1fs: giving up on it",
            describe(self.scope),
            window,
        )
        self._finish(Outcome.NODE_LOST)

    def peer_dropped(self) -> None:
        """The Node's alive frame did not list this connection: it let go of it (its frames
        were lost). Acted on only while waiting for a frame, as every frame the Node sent
        before letting go has been taken by then."""
        if not self.deadline.waiting:
            return  # busy with a frame: the Node's next alive frame tells again
        logger.warning("the Node serving %s no longer has it: giving up", describe(self.scope))
        self._finish(Outcome.NODE_LOST)

    def _finish(self, outcome: Outcome) -> None:
        if self._stop is not None:
            return
        self._stop = outcome
        self.deadline.expire()  # end the receive under way, if one is
