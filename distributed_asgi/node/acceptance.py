"""How a Node tells the edge it has a connection, before the application's first line runs.

Rules of this file:

- Unclaimed (the connect did not ask, or the layer cannot claim): an ``accept`` frame is
  written to the edge's reply channel, awaited.
- Claimed (core/claims.py): the claim is set, awaited, and the accept is owed. It rides the
  connection's first frame (``first_frame``), or goes alone: before anything else the Node
  writes (``flush``), when the application waits for the edge (the edge sends only to the
  channel an accept names), or ``ACCEPT_HOLD`` after the application started, so the edge of a
  slow response hears from its Node long before its pick-up deadline.
- A claim the edge got first means the edge answered 503: nothing may start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from distributed_asgi._aio import Turns
from distributed_asgi._liveness import Liveness
from distributed_asgi.core.claims import ACCEPT_HOLD, node_holder
from distributed_asgi.core.frames import Connect, describe, encode_accept, encode_asgi
from distributed_asgi.core.types import Message
from distributed_asgi.layers import ClaimingLayer, GatewayLayer, claiming

__all__ = ["CLAIM_KEPT", "Acceptance", "NodeClaims"]

logger = logging.getLogger("distributed_asgi.node")

# How often at most the owed accepts are looked at: an accept goes alone between ACCEPT_HOLD
# and ACCEPT_HOLD + SWEEP_EVERY after its application started.
SWEEP_EVERY = 0.01
# How long a Node's claim outlives the connect's deadline: past the edge's own claim at its
# deadline plus PICKUP_GRACE, with room for a busy edge and the two clocks' difference.
CLAIM_KEPT = 10.0


class NodeClaims:
    """What one Node's claimed connections share: the layer that claims, and one timer for the
    accepts they owe (a timer per connection costs about 2 µs to make and cancel)."""

    __slots__ = ("_held", "_loop", "_owed", "_timer", "layer")

    def __init__(self, layer: ClaimingLayer) -> None:
        self.layer = layer
        self._loop: asyncio.AbstractEventLoop | None = None  # the Node's, from the first hold
        # The accepts held, by connection id, until they are sent or due (an accept sent or a
        # connection ended is forgotten at once: nothing is kept alive for the timer).
        self._owed: dict[str, Acceptance] = {}
        self._held: deque[tuple[float, str]] = deque()  # (due, connection id), as held
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, layer: object) -> NodeClaims | None:
        """A Node's, when its layer can claim; None otherwise."""
        claims = claiming(layer)
        return None if claims is None else cls(claims)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():  # a Node run again runs a new loop
            self._loop, self._timer = asyncio.get_running_loop(), None
            self._held.clear()
            self._owed.clear()
        return self._loop

    def hold(self, conn_id: str, acceptance: Acceptance) -> None:
        """``acceptance`` goes alone ``ACCEPT_HOLD`` from now unless forgotten before."""
        due = self.loop.time() + ACCEPT_HOLD
        self._owed[conn_id] = acceptance
        self._held.append((due, conn_id))
        if self._timer is None:
            self._timer = self.loop.call_at(due, self._due)

    def forget(self, conn_id: str) -> None:
        self._owed.pop(conn_id, None)

    def _due(self) -> None:
        self._timer = None
        held, owed, now = self._held, self._owed, self.loop.time()
        while held and held[0][0] <= now:
            acceptance = owed.pop(held.popleft()[1], None)
            if acceptance is not None:
                acceptance.due()
        if held:  # not before SWEEP_EVERY: one timer for the accepts held meanwhile
            self._timer = self.loop.call_at(max(held[0][0], now + SWEEP_EVERY), self._due)


class Acceptance:
    """The accept of one connection: written before the application, or owed (claimed).

    It keeps what the accept says, not the connection: no reference cycle, so a connection is
    freed when it ends, not by the garbage collector."""

    __slots__ = (
        "_claims", "_connect", "_heartbeat", "_layer", "_liveness", "_node", "_peer", "_turns",
        "channel", "owed",
    )  # fmt: skip

    def __init__(
        self,
        layer: GatewayLayer,
        connect: Connect,
        *,
        claims: NodeClaims | None,
        heartbeat: float,
        peer: str | None,
        node: str | None,
        liveness: Liveness[Any],
        turns: Turns,
    ) -> None:
        self._layer, self._connect, self._claims = layer, connect, claims
        self._heartbeat, self._peer, self._node = heartbeat, peer, node
        self._liveness, self._turns = liveness, turns
        self.channel = ""  # the connection's own channel, named in the accept (take())
        self.owed = False  # claimed: the accept goes with the first frame to the edge

    async def take(self, channel: str) -> bool:
        """Claim the connection or write its accept naming ``channel`` (``LayerError`` when
        Redis fails); False when the edge had claimed it first."""
        self.channel = channel
        connect = self._connect
        if self._claims is None or self._peer is None:
            await self._layer.push(connect.reply_channel, self.frame())
            return True
        holder = node_holder(self._peer, self._liveness.round, self._heartbeat, self._node)
        ttl = max(0.0, connect.deadline - time.time()) + CLAIM_KEPT
        if await self._claims.layer.claim(connect.reply_channel, holder, ttl) is not None:
            logger.warning(
                "the edge gave up on %s before this Node claimed it: not starting the application",
                describe(connect.scope),
            )
            return False
        self.owed = True
        return True

    def hold(self) -> None:
        """The application starts now: an owed accept goes alone if it sends nothing soon, or
        at once when the pick-up deadline is too near to wait."""
        if self.owed and self._claims is not None:
            if self._connect.deadline - time.time() > 2 * ACCEPT_HOLD:
                self._claims.hold(self._connect.conn_id, self)
            else:
                self.due()

    def cancel(self) -> None:
        """The connection ended: what it still sends, it sends itself."""
        if self._claims is not None:
            self._claims.forget(self._connect.conn_id)

    def due(self) -> None:
        """The application sent nothing within ``ACCEPT_HOLD``: the accept goes alone."""
        if self.owed and self._claims is not None:
            self._claims.loop.create_task(self.send_alone()).add_done_callback(_retrieve)

    def _sent(self) -> None:
        self.owed = False
        if self._claims is not None:
            self._claims.forget(self._connect.conn_id)

    def frame(self, messages: list[Message] | None = None) -> Message:
        return encode_accept(
            self._connect.conn_id,
            self.channel,
            self._heartbeat,
            messages,
            peer=self._peer,
            round=self._liveness.round,
            node=self._node,
        )

    def first_frame(self, messages: list[Message]) -> Message:
        """The frame of the application's ``messages``: with the accept while it is owed."""
        if self.owed:
            self._sent()
            return self.frame(messages)
        return encode_asgi(self._connect.conn_id, messages)

    async def flush(self) -> None:
        """An owed accept, alone; the caller has the connection's turn."""
        if self.owed:
            self._sent()
            await self._layer.push(self._connect.reply_channel, self.frame())

    async def send_alone(self) -> None:
        """An owed accept, alone, in turn with the connection's other frames."""
        turns = self._turns
        if not turns.take_now():
            await turns.wait()
        try:
            await self.flush()
        finally:
            turns.done()


def _retrieve(task: asyncio.Task[None]) -> None:
    """A lone accept that could not be written: the edge looks for the claim before its
    deadline and finds this Node holding it (core/claims.py)."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not send an accept: %s", task.exception())
