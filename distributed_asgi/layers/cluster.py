"""``ClusterPlacement``: a Redis Cluster's slots as the layer's placement, one ``Shard`` per master.

Selected by a ``redis+cluster://host:port`` (or ``rediss+cluster://``) entry in ``hosts``: a
``RedisChannelLayer`` on such hosts places its keys here (placement.py has the interface);
``RedisClusterChannelLayer`` is the same layer, refusing any other hosts. A place is a bucket.

Rules of this file:

- Every key carries a hash tag ``{B}``, B = crc32(routing name) % BUCKETS, where the routing
  name is a normal channel's name, a process inbox's ``specific.abc!`` or a group's name. A
  queue, its capacity counters and the group memberships of its channel share one tag, so every
  script (send with its capacity check, group_add, acks, group_send over one bucket) touches one
  slot, as Redis Cluster requires.
- A group's memberships are stored per bucket beside their members' queues, and the group's
  index ``P:gi:{B}GROUP`` lists its buckets: ``group_send`` is one script per bucket that has
  members, all sent at once, and those for one master ride in one pipeline.
- The slot map comes from ``CLUSTER SLOTS`` and is reloaded (once, however many callers ask)
  on ``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN`` or a lost node; the call is then retried
  on the new owner. ``ASK`` (a slot being migrated) is retried until the migration ends rather
  than followed with ``ASKING``: the shard's pipelines carry no per-command prefix.
- A process inbox is left to expire when the layer closes (a ring deletes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import zlib
from binascii import crc_hqx
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from .backlog import Backlog
from .hosts import HostSpec
from .keys import KeySpace, hash_tag
from .loops import LoopStates
from .placement import Relocate
from .queue_reader import QueueReader
from .redis import RedisChannelLayer
from .scripts import GROUP_BUCKETS, GROUP_INDEX_ADD, LuaScript
from .shard import CONNECTION_ERRORS, AckLedger, Shard, translated

__all__ = ["BUCKETS", "ClusterMap", "ClusterPlacement", "RedisClusterChannelLayer", "bucket_of"]

logger = logging.getLogger("distributed_asgi.layers")

SLOTS = 16384
# Names are grouped into this many hash tags. Fewer tags than slots keeps group_send at one
# script per bucket with members (at most BUCKETS per call however large the group), and
# 1024 tags still spread evenly over any sensible number of masters.
BUCKETS = 1024
# The slot of a key tagged {B}, for each bucket B (CRC16-XMODEM, as Redis Cluster hashes).
_BUCKET_SLOTS = [crc_hqx(str(b).encode(), 0) % SLOTS for b in range(BUCKETS)]
# redis-py turns these replies into its own classes (whose text drops the code word).
_REDIRECTS = (AskError, MovedError, TryAgainError, ClusterDownError)
MAX_ATTEMPTS = 6
# What makes a slot map reload try the next node.
_LOAD_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, ResponseError)


def bucket_of(name: str) -> int:
    return zlib.crc32(name.encode()) % BUCKETS


def is_redirect(exc: BaseException) -> bool:
    return isinstance(exc, _REDIRECTS)


class ClusterMap:
    """The masters of one cluster and which owns each slot, as seen from one event loop."""

    def __init__(
        self, spec: HostSpec, ledgers: dict[tuple[str, int], AckLedger] | None = None
    ) -> None:
        self.spec = spec
        # Acks not yet written, per node: the layer's, shared by the maps of every loop.
        self.ledgers = ledgers if ledgers is not None else {}
        self.shards: dict[tuple[str, int], Shard] = {}  # every node ever routed to
        self.readers: dict[str, QueueReader] = {}
        self._owners: list[Shard] | None = None  # slot -> master
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        return self._owners is not None

    def masters(self) -> list[Shard]:
        assert self._owners is not None
        return list(dict.fromkeys(self._owners))

    def shard_for(self, bucket: int) -> Shard:
        assert self._owners is not None, "refresh() first"
        return self._owners[_BUCKET_SLOTS[bucket]]

    async def refresh(self) -> None:
        """Reload the slot map; concurrent callers share one reload."""
        task = self._refreshing
        if task is None:
            task = self._refreshing = asyncio.get_running_loop().create_task(self._load())
            task.add_done_callback(self._refreshed)
        await asyncio.shield(task)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved here: a waiter that was cancelled did not see it

    async def _load(self) -> None:
        # Known masters first (one of them surely answers), then the configured start nodes.
        candidates = list(dict.fromkeys([*self.shards, *self.spec.startup_nodes()]))
        failure: BaseException | None = None
        for host, port in candidates:
            shard = self._shard(host, port)
            try:
                reply = await shard.client.execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "SLOTS"
                )
            except _LOAD_ERRORS as exc:
                failure = exc
                continue
            self._apply(reply, host)
            return
        assert failure is not None
        raise failure

    def _apply(self, reply: Sequence[Any], queried_host: str) -> None:
        owners: list[Shard | None] = [None] * SLOTS
        for entry in reply:
            first, last, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            if host in ("", "?"):
                host = queried_host  # the node does not know its own address: use ours
            shard = self._shard(host, int(master[1]))
            owners[first : last + 1] = [shard] * (last - first + 1)
        missing = owners.count(None)
        if missing:
            raise ClusterDownError(f"{missing} of {SLOTS} slots have no master")
        self._owners = [s for s in owners if s is not None]

    def _shard(self, host: str, port: int) -> Shard:
        shard = self.shards.get((host, port))
        if shard is None:
            ledger = self.ledgers.setdefault((host, port), AckLedger())
            shard = self.shards[(host, port)] = Shard(self.spec.node_spec(host, port), ledger)
        return shard

    async def teardown(self) -> None:
        """Stop the readers (each reads back what is on the wire first), write what is
        queued and close every connection."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        await asyncio.gather(*(reader.close() for reader in self.readers.values()))
        await asyncio.gather(*(shard.close() for shard in self.shards.values()))

    close = teardown

    def abandon(self) -> None:
        for reader in self.readers.values():
            reader.abandon()


class ClusterPlacement:
    """Keys placed by bucket on the masters of one Redis Cluster, following it as it changes."""

    def __init__(self, spec: HostSpec, keys: KeySpace) -> None:
        if "{" in keys.prefix or "}" in keys.prefix:
            # A brace in the prefix would become the hash tag and put every key in one slot.
            raise ValueError(f"prefix must not contain braces on a cluster, got {keys.prefix!r}")
        self.spec = spec
        self.keys = keys
        self._ledgers: dict[tuple[str, int], AckLedger] = {}
        self._maps = LoopStates(lambda: ClusterMap(self.spec, self._ledgers))

    def place(self, name: str) -> int:
        return bucket_of(name)

    def place_key(self, kind: str, name: str) -> int:
        return bucket_of(name)

    def tag(self, place: int) -> str:
        return hash_tag(place)

    async def _ready(self) -> ClusterMap:
        cluster = self._maps.get()
        if not cluster.loaded:
            await cluster.refresh()
        return cluster

    def call(
        self, place: int, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Awaitable[Any]:
        return self._call(place, script, keys, args)

    async def _call(
        self, bucket: int, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run ``script`` on the master of ``bucket``, following the cluster as it changes."""
        with translated():  # a redirect given up on, a slot map that could not be loaded
            return await self._follow(bucket, script, keys, args)

    async def _follow(
        self, bucket: int, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        cluster = await self._ready()
        for attempt in range(MAX_ATTEMPTS):
            shard = cluster.shard_for(bucket)
            try:
                return await shard.call(script, keys, args)
            except ResponseError as exc:
                if not is_redirect(exc) or attempt == MAX_ATTEMPTS - 1:
                    raise
                if not isinstance(exc, MovedError):
                    # A slot in migration or a cluster electing a new master: give it a moment.
                    await asyncio.sleep(0.05 * 2**attempt)
                await cluster.refresh()
            except CONNECTION_ERRORS:
                # A replica may have taken over the lost master's slots: look again, and fail
                # fast (as with one server) when the slots still point at the lost node.
                with contextlib.suppress(*_LOAD_ERRORS):
                    await cluster.refresh()
                if attempt == MAX_ATTEMPTS - 1 or cluster.shard_for(bucket) is shard:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def index_group(self, group: str, place: int, group_expiry_ms: int) -> Awaitable[Any] | None:
        # The group's index lists the buckets it has members in: group_send visits only those.
        bucket = bucket_of(group)
        index = self.keys.group_index(group, hash_tag(bucket))
        return self._call(bucket, GROUP_INDEX_ADD, [index], [place, group_expiry_ms])

    async def group_places(self, group: str, group_expiry_ms: int) -> Sequence[int]:
        bucket = bucket_of(group)
        index = self.keys.group_index(group, hash_tag(bucket))
        buckets = await self._call(bucket, GROUP_BUCKETS, [index], [group_expiry_ms])
        return [int(b) for b in buckets]

    def readers(self) -> dict[str, QueueReader]:
        return self._maps.get().readers

    async def reader_home(self, place: int) -> tuple[Shard, Relocate | None]:
        cluster = self._maps.get()
        delay = 0.05
        while not cluster.loaded:
            # As with one server, a receive() waits out an outage instead of failing: here one
            # that started before any node could tell where its queue lives.
            try:
                await cluster.refresh()
            except _LOAD_ERRORS as exc:
                if delay == 0.05:
                    logger.warning(
                        "Redis Cluster %s unreachable (%s: %s); retrying",
                        self.spec.describe(),
                        type(exc).__name__,
                        exc,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return cluster.shard_for(place), functools.partial(_relocate, cluster, place)

    async def shard(self, place: int) -> Shard:
        return (await self._ready()).shard_for(place)

    async def shards(self) -> list[Shard]:
        return (await self._ready()).masters()

    async def unlink(self, shard: Shard, keys: Sequence[bytes]) -> None:
        # One key per UNLINK: keys of several slots in one command are a CROSSSLOT error.
        async with shard.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.unlink(key)
            await pipe.execute()

    def forget_acks(self) -> None:
        for ledger in self._ledgers.values():
            ledger.clear()

    async def close(self, inboxes: dict[str, Backlog]) -> None:
        cluster = self._maps.pop()
        if cluster is not None:
            await cluster.teardown()

    def describe(self) -> str:
        return f"cluster={self.spec.describe()}"


class RedisClusterChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` on a Redis Cluster; same options, same behaviour. Refuses hosts
    that are not one ``redis+cluster://`` entry (``RedisChannelLayer`` takes either)."""

    def _placement(self, specs: Sequence[HostSpec]) -> ClusterPlacement:
        (spec,) = specs
        if not spec.cluster:
            raise ValueError(
                f"RedisClusterChannelLayer needs a redis+cluster:// host, got {spec.describe()}"
            )
        return ClusterPlacement(spec, self.keys)


async def _relocate(cluster: ClusterMap, bucket: int) -> Shard:
    await cluster.refresh()
    return cluster.shard_for(bucket)
