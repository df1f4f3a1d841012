"""The pick-up: a ``connect`` out on the route channel, an ``accept`` back, or a refusal.

One deadline (the connection's one timer) covers the whole pick-up: the connect's send and
the wait for an accept. A send still unconfirmed at the connect's own deadline cannot start
anything any more (a Node drops it), so both end ``PICKUP_GRACE`` after it. What went wrong
decides the answer:

| what happened                                 | outcome      | status              |
|-----------------------------------------------|--------------|---------------------|
| the layer did not take the connect in time    | redis_down   | 503                 |
| the connect was queued, no accept in time     | no_worker    | ``no_worker_status``|
| the route channel is full                     | capacity     | ``no_worker_status``|
| the layer cannot reach its server             | redis_down   | 503                 |
| the layer's server refused the write          | capacity     | 503                 |

A connect that asks Nodes to claim it (a whole request; core/claims.py) has nothing back by
its deadline only when no Node took it or the Node that did is slow to speak: the edge then
claims it itself. Got: no Node will start it, the refusal above is exact. Lost: the holder is
returned, for the connection to wait for that Node. A claim that cannot be made (Redis gone)
leaves the refusal above, as for a connect that does not ask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from distributed_asgi._aio import Deadline, DeadlineExceeded, within
from distributed_asgi.core.claims import EDGE_HOLDER, FIRST_LOOK, NodeHolder, parse_holder
from distributed_asgi.core.frames import (
    PICKUP_GRACE,
    Accept,
    Connect,
    describe,
    encode,
)
from distributed_asgi.core.outcomes import HTTPTimeout, Outcome
from distributed_asgi.core.types import Message, Scope
from distributed_asgi.edge.node_link import decode_logged
from distributed_asgi.edge.settings import EdgeSettings
from distributed_asgi.layers import (
    ChannelFull,
    ClaimingLayer,
    GatewayLayer,
    LayerError,
    LayerRefused,
    LayerUnavailable,
)

__all__ = ["PickUp", "Refused"]

logger = logging.getLogger("distributed_asgi.distributor")

# How long the edge's claim on a connection it refused is kept: longer than any Node that
# took the connect before its deadline can take to claim it.
EDGE_CLAIM_KEPT = 60.0


@dataclass(frozen=True)
class Refused:
    """No Node took the connection: answer ``status`` (with ``Retry-After``)."""

    outcome: Outcome
    status: int


@dataclass
class PickUp:
    """One connection's pick-up; ``run()`` gives the accept or why there is none."""

    layer: GatewayLayer
    settings: EdgeSettings
    key: str
    conn_id: str
    scope: Scope
    reply_channel: str = ""
    peer: str | None = None  # the edge's liveness channel, for the Node to send alive frames to
    round: int | None = None  # the edge's alive round when the connection was made
    claims: ClaimingLayer | None = None  # set: the connect asks Nodes to claim it
    queued: bool = False  # the layer confirmed the connect's send
    wait: float | None = None  # connect sent -> accept, for the metrics

    async def run(
        self, initial: list[Message], deadline: Deadline
    ) -> Accept | NodeHolder | Refused:
        settings = self.settings
        try:
            return await self._connect(
                initial, deadline, deadline.now() + settings.pickup_timeout + PICKUP_GRACE
            )
        except TimeoutError:
            if not deadline.expired():
                raise  # not the pick-up's: the layer's own
        except ChannelFull:
            logger.warning("route channel %r is full: refusing %s", self.key, describe(self.scope))
            return Refused(Outcome.CAPACITY, settings.no_worker_status)
        except LayerUnavailable as exc:
            logger.warning("cannot reach Redis (%s): refusing %s", exc, describe(self.scope))
            return Refused(Outcome.REDIS_DOWN, 503)
        except LayerRefused as exc:
            # Nothing was queued. Redis said why (out of memory, a key of another type...).
            logger.error(
                "Redis refused the connect of %s for %r: %s", describe(self.scope), self.key, exc
            )
            return Refused(Outcome.CAPACITY, 503)
        # Waited on after the handler, never in it (compile_native.py says why).
        return await self._deadline_passed()

    async def _deadline_passed(self) -> NodeHolder | Refused:
        """Nothing came back by the pick-up deadline: the Node holding the connection, or
        the refusal."""
        settings = self.settings
        if not self.queued:
            logger.warning(
                "Redis did not take the connect of %s for %r within %.1fs: refusing it",
                describe(self.scope),
                self.key,
                settings.pickup_timeout,
            )
            return Refused(Outcome.REDIS_DOWN, 503)
        if self.claims is not None:
            holder = await self._claim(self.claims)
            if holder is not None:
                return holder
        logger.warning(
            "no Node took %s on %r within %.1fs",
            describe(self.scope),
            self.key,
            settings.pickup_timeout,
        )
        return Refused(Outcome.NO_WORKER, settings.no_worker_status)

    async def _look(self, claims: ClaimingLayer, budget: float) -> NodeHolder | None:
        """The Node holding the connection, if one claimed it (a Node slow to speak, or one
        that died before its accept went out); None: none (yet), or no answer."""
        try:
            held = await within(budget, claims.holder(self.reply_channel))
        except (DeadlineExceeded, LayerError):
            return None  # the claim at the deadline decides
        return None if held is None else parse_holder(held)

    async def _claim(self, claims: ClaimingLayer) -> NodeHolder | Refused | None:
        """Claim the connection no Node spoke for: None when the edge got it (or could not ask:
        answered as if no Node took it), else the Node holding it."""
        try:
            held = await within(
                PICKUP_GRACE, claims.claim(self.reply_channel, EDGE_HOLDER, EDGE_CLAIM_KEPT)
            )
        except (DeadlineExceeded, LayerError) as exc:
            logger.warning(
                "could not claim %s after its pick-up deadline (%s): refusing it",
                describe(self.scope),
                str(exc) or "no answer from Redis",
            )
            return None
        if held is None:
            return None
        holder = parse_holder(held)
        if holder is None:
            # Held, but not by a Node this edge can watch: it may have started.
            logger.warning("%s is claimed by %r: answering 502", describe(self.scope), held)
            return Refused(Outcome.NODE_LOST, 502)
        return holder

    async def _connect(
        self, initial: list[Message], deadline: Deadline, final: float
    ) -> Accept | NodeHolder:
        """The connect out, and its accept back by ``final`` (loop time), or the Node found
        holding a claimed one."""
        settings = self.settings
        self.reply_channel = await self.layer.new_channel("edge")
        frame = Connect(
            self.conn_id,
            self.scope,
            self.reply_channel,
            time.time() + settings.pickup_timeout,
            settings.heartbeat_interval,
            initial,
            self.peer,
            self.round,
            self.claims is not None,
        )
        sent = time.monotonic()
        await deadline.wait(self.layer.send(self.key, encode(frame)), final)
        self.queued = True
        look = FIRST_LOOK
        while True:
            when = final
            if self.claims is not None:
                when = min(final, deadline.now() + look)
            raw: Message | None
            try:
                raw = await deadline.wait(self.layer.receive(self.reply_channel), when)
            except TimeoutError:
                if when == final or not deadline.expired():
                    raise
                raw = None  # time for a look at the claim, after the handler
            if raw is None:
                assert self.claims is not None
                holder = await self._look(self.claims, final - deadline.now())
                if holder is not None:
                    return holder
                look *= 2
                continue
            answer = self._accept_in(raw)
            if answer is not None:
                self.wait = time.monotonic() - sent
                return answer

    async def accept_from_holder(
        self,
        deadline: Deadline,
        next_deadline: Callable[[], tuple[float | None, HTTPTimeout | None]],
        heard: Callable[[], None],
    ) -> Accept | HTTPTimeout | None:
        """The accept of the Node found holding the connection, waited for past the pick-up
        (the liveness watch judges that Node meanwhile): the HTTP timeout (``next_deadline``)
        that ended the wait instead, or None when ``deadline.expire()`` did."""
        while True:
            when, which = next_deadline()
            try:
                raw = await deadline.wait(self.layer.receive(self.reply_channel), when)
            except TimeoutError:
                if not deadline.expired():
                    raise  # not ours: the layer's own
                return which
            heard()
            answer = self._accept_in(raw)
            if answer is not None:
                return answer

    def _accept_in(self, raw: Message) -> Accept | None:
        """The accept in a frame of the reply channel; None (logged) for anything else."""
        answer = decode_logged(raw, self.reply_channel)
        if answer is None or isinstance(answer, Accept):
            return answer
        logger.warning(
            "dropped a %s frame on %s: expected an accept",
            type(answer).__name__,
            self.reply_channel,
        )
        return None
