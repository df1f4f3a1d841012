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
from typing import TYPE_CHECKING

from distributed_asgi.core.claims import ACCEPT_HOLD, node_holder
from distributed_asgi.core.frames import describe, encode_accept, encode_asgi
from distributed_asgi.core.types import Message
from distributed_asgi.layers import ClaimingLayer

if TYPE_CHECKING:
    from distributed_asgi.node.connection import NodeConnection

__all__ = ["CLAIM_KEPT", "Acceptance"]

logger = logging.getLogger("distributed_asgi.node")

# How long a Node's claim outlives the connect's deadline: past the edge's own claim at its
# deadline plus PICKUP_GRACE, with room for a busy edge and the two clocks' difference.
CLAIM_KEPT = 10.0


class Acceptance:
    """The accept of one connection: written before the application, or owed (claimed)."""

    __slots__ = ("_claims", "_conn", "_timer", "owed")

    def __init__(self, connection: NodeConnection, claims: ClaimingLayer | None) -> None:
        self._conn = connection
        self._claims = claims
        self._timer: asyncio.TimerHandle | None = None
        self.owed = False  # claimed: the accept goes with the first frame to the edge

    async def take(self) -> bool:
        """Claim the connection or write its accept (``LayerError`` when Redis fails); False
        when the edge had claimed it first."""
        conn = self._conn
        if self._claims is None:
            await conn.layer.push(conn.reply_channel, self.frame())
            return True
        assert conn.own_peer is not None
        holder = node_holder(
            conn.own_peer, conn.liveness.round, conn.heartbeat_interval, conn.node_id
        )
        ttl = max(0.0, conn.deadline - time.time()) + CLAIM_KEPT
        if await self._claims.claim(conn.reply_channel, holder, ttl) is not None:
            logger.warning(
                "the edge gave up on %s before this Node claimed it: not starting the application",
                describe(conn.scope),
            )
            return False
        self.owed = True
        return True

    def hold(self) -> None:
        """The application starts now: an owed accept goes alone if it sends nothing soon."""
        if self.owed:
            hold = min(ACCEPT_HOLD, max(0.0, self._conn.deadline - time.time()) / 2)
            self._timer = self._conn.loop.call_later(hold, self._alone)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def frame(self, messages: list[Message] | None = None) -> Message:
        conn = self._conn
        return encode_accept(
            conn.conn_id,
            conn.channel,
            conn.heartbeat_interval,
            messages,
            peer=conn.own_peer,
            round=conn.liveness.round,
            node=conn.node_id,
        )

    def first_frame(self, messages: list[Message]) -> Message:
        """The frame of the application's ``messages``: with the accept while it is owed."""
        if self.owed:
            self.owed = False
            return self.frame(messages)
        return encode_asgi(self._conn.conn_id, messages)

    async def flush(self) -> None:
        """An owed accept, alone; the caller has the connection's turn."""
        if self.owed:
            self.owed = False
            await self._conn.layer.push(self._conn.reply_channel, self.frame())

    async def send_alone(self) -> None:
        """An owed accept, alone, in turn with the connection's other frames."""
        turns = self._conn.turns
        if not turns.take_now():
            await turns.wait()
        try:
            await self.flush()
        finally:
            turns.done()

    def _alone(self) -> None:
        self._timer = None
        if self.owed:
            self._conn.loop.create_task(self.send_alone()).add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[None]) -> None:
    """A lone accept that could not be written: the edge looks for the claim before its
    deadline and finds this Node holding it (core/claims.py)."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not send an accept: %s", task.exception())
