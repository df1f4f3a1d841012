"""Where a name's keys live: the ``Placement`` interface, and a ring of shards implementing it.

Rules of this file:

- A *place* is an int the placement gives a routing name (a normal channel's name, a process
  inbox's ``specific.abc!``, a group's name): the index of a shard on a ring (here), a bucket
  on a Redis Cluster (cluster.py). The layer (redis.py) tags every key of the name with
  ``tag(place)`` (keys.py) and runs its scripts with ``call(place, ...)``, so it never knows
  which of the two it runs on. The placement is chosen at construction from ``hosts``.
- A group's memberships are stored beside each member's queue, at the member's place;
  ``group_places`` lists the places ``group_send`` must visit (every shard of a ring; the
  buckets a cluster's group index names).
- Connections and readers belong to one event loop and are kept per loop (loops.py); the acks
  not yet written (one ``AckLedger`` per server) belong to the placement and outlive loops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from .backlog import Backlog
from .base import non_local_name
from .hashring import HashRing
from .hosts import HostSpec
from .keys import QUEUE, KeySpace
from .loops import LoopStates
from .queue_reader import RECEIVE_ERRORS, QueueReader
from .scripts import LuaScript
from .shard import AckLedger, Shard

__all__ = ["Placement", "Relocate", "RingPlacement"]

logger = logging.getLogger("distributed_asgi.layers")

# Finds the shard that serves a reader's queue now (a cluster slot may move); see QueueReader.
Relocate = Callable[[], Awaitable[Shard]]


class Placement(Protocol):
    """Which server holds a name's keys, as seen from the running event loop."""

    def place(self, name: str) -> int:
        """The place of a routing name."""
        ...

    def place_key(self, kind: str, name: str) -> int:
        """The place of the ``kind`` key (keys.py: ``QUEUE``, ``NODE``) of ``name``."""
        ...

    def tag(self, place: int) -> str:
        """The hash tag every key at ``place`` carries ("" where no tag is needed)."""
        ...

    def call(
        self, place: int, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Awaitable[Any]:
        """Run ``script`` on the server of ``place`` (batched with this loop's other calls)."""
        ...

    def index_group(self, group: str, place: int, group_expiry_ms: int) -> Awaitable[Any] | None:
        """Note that ``group`` has a member at ``place``; None where every place is visited."""
        ...

    async def group_places(self, group: str, group_expiry_ms: int) -> Sequence[int]:
        """The places that may hold members of ``group``."""
        ...

    def readers(self) -> dict[str, QueueReader]:
        """This loop's readers, by queue key."""
        ...

    async def reader_home(self, place: int) -> tuple[Shard, Relocate | None]:
        """The server a new reader at ``place`` reads from, and how it finds the next one if
        the place moves; waits out an outage (as a ``receive()`` does) instead of failing."""
        ...

    async def shard(self, place: int) -> Shard:
        """The server of ``place`` now."""
        ...

    async def shards(self) -> list[Shard]:
        """Every server the layer writes to (each shard, every master of a cluster)."""
        ...

    async def unlink(self, shard: Shard, keys: Sequence[bytes]) -> None:
        """Delete ``keys``, all found on ``shard``."""
        ...

    def forget_acks(self) -> None:
        """Drop the acks not yet written (their counters are being deleted)."""
        ...

    async def close(self, inboxes: dict[str, Backlog]) -> None:
        """Stop this loop's readers and close its connections; ``inboxes`` (queue key ->
        backlog) are the layer's process inboxes, which the placement may delete."""
        ...

    def describe(self) -> str:
        """The servers, for the layer's repr (passwords masked)."""
        ...


class _LoopState:
    """Connections and readers of a ring in one event loop."""

    def __init__(self, specs: Sequence[HostSpec], ledgers: Sequence[AckLedger]) -> None:
        self.shards = [Shard(spec, ledger) for spec, ledger in zip(specs, ledgers, strict=True)]
        self.readers: dict[str, QueueReader] = {}

    async def stop_readers(self) -> None:
        """Stop every reader; each reads back what its pops on the wire take first."""
        await asyncio.gather(*(reader.close() for reader in self.readers.values()))

    async def close_shards(self) -> None:
        """Write what is queued (acks included) and close the connections."""
        await asyncio.gather(*(shard.close() for shard in self.shards))

    async def teardown(self) -> None:
        await self.stop_readers()
        await self.close_shards()

    def abandon(self) -> None:
        for reader in self.readers.values():
            reader.abandon()


class RingPlacement:
    """One server, or several sharded by consistent hashing (hashring.py): a place is a shard's
    index, no key needs a hash tag, and ``group_send`` visits every shard."""

    def __init__(self, specs: Sequence[HostSpec], keys: KeySpace) -> None:
        self.specs = list(specs)
        self.keys = keys
        self.ring = HashRing([spec.identity for spec in self.specs])
        self._ledgers = [AckLedger() for _ in self.specs]
        self._loops = LoopStates(lambda: _LoopState(self.specs, self._ledgers))
        self._all_places = range(len(self.specs))

    def place(self, name: str) -> int:
        return self.ring.shard_for(name)

    def place_key(self, kind: str, name: str) -> int:
        # A Node's presence is placed by "node:<id>", apart from any channel of that name.
        return self.ring.shard_for(non_local_name(name) if kind == QUEUE else f"{kind}:{name}")

    def tag(self, place: int) -> str:
        return ""

    def call(
        self, place: int, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Awaitable[Any]:
        # The shard's own coroutine, not one wrapped around it: nothing added per send.
        return self._loops.get().shards[place].call(script, keys, args)

    def index_group(self, group: str, place: int, group_expiry_ms: int) -> Awaitable[Any] | None:
        return None

    async def group_places(self, group: str, group_expiry_ms: int) -> Sequence[int]:
        return self._all_places

    def readers(self) -> dict[str, QueueReader]:
        return self._loops.get().readers

    async def reader_home(self, place: int) -> tuple[Shard, Relocate | None]:
        return self._loops.get().shards[place], None

    async def shard(self, place: int) -> Shard:
        return self._loops.get().shards[place]

    async def shards(self) -> list[Shard]:
        return self._loops.get().shards

    async def unlink(self, shard: Shard, keys: Sequence[bytes]) -> None:
        await shard.client.unlink(*keys)

    def forget_acks(self) -> None:
        for ledger in self._ledgers:
            ledger.clear()

    async def close(self, inboxes: dict[str, Backlog]) -> None:
        """When no other event loop uses the layer, also delete the process inboxes: no one
        else reads them, and keys left to expire would outlive the process."""
        state = self._loops.pop()
        last = not self._loops.others()
        if state is None:
            if not (last and inboxes):
                return
            state = _LoopState(self.specs, self._ledgers)  # a loop that only closes
        await state.stop_readers()
        if last and inboxes:
            queue_keys = list(inboxes)
            inboxes.clear()
            await self._delete_inboxes(state, queue_keys)
        await state.close_shards()

    async def _delete_inboxes(self, state: _LoopState, queue_keys: Sequence[str]) -> None:
        for queue_key in queue_keys:
            inbox = self.keys.name_of(QUEUE, queue_key)
            assert inbox is not None
            counter_key = self.keys.counters(inbox)
            shard = state.shards[self.ring.shard_for(inbox)]
            shard.ledger.discard(counter_key)
            await shard.settle()  # a batch still on the wire would re-create the counters
            try:
                await shard.client.unlink(queue_key, counter_key)
            except RECEIVE_ERRORS as exc:
                logger.info("could not delete %s on close (it expires): %s", queue_key, exc)

    def describe(self) -> str:
        return "hosts=[" + ", ".join(spec.describe() for spec in self.specs) + "]"
