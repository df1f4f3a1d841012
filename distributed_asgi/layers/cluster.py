"""``RedisClusterChannelLayer``: the layer over a Redis Cluster, one ``Shard`` per master.

Selected by a ``redis+cluster://host:port`` (or ``rediss+cluster://``) entry in ``hosts``;
``RedisChannelLayer(hosts=[...])`` returns this class for it.

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
- Nothing here touches the single-server path: ``RedisChannelLayer`` is unchanged for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import zlib
from binascii import crc_hqx
from collections.abc import Sequence
from typing import Any

from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from .base import (
    ChannelFull,
    Message,
    non_local_name,
    require_own_channel,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
)
from .channel_reader import ChannelReader
from .hosts import HostSpec
from .inbox_reader import InboxReader
from .keys import hash_tag
from .loops import LoopStates
from .options import LayerOptions
from .queue_reader import QueueReader
from .redis import RedisChannelLayer, _log_full_members
from .scripts import (
    GROUP_ADD,
    GROUP_BUCKETS,
    GROUP_DISCARD,
    GROUP_INDEX_ADD,
    GROUP_SEND,
    SEND,
    LuaScript,
)
from .server import Server
from .shard import CONNECTION_ERRORS, AckLedger, Shard, translated

__all__ = ["BUCKETS", "ClusterMap", "RedisClusterChannelLayer", "bucket_of"]

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


class RedisClusterChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` on a Redis Cluster; same options, same behaviour."""

    def _setup(self, hosts: object, options: LayerOptions) -> None:
        super()._setup(hosts, options)
        (self.cluster_spec,) = self.hosts
        if not self.cluster_spec.cluster:
            raise ValueError(
                f"RedisClusterChannelLayer needs a redis+cluster:// host, got "
                f"{self.cluster_spec.describe()}"
            )
        if "{" in self.prefix or "}" in self.prefix:
            # A brace in the prefix would become the hash tag and put every key in one slot.
            raise ValueError(f"prefix must not contain braces on a cluster, got {self.prefix!r}")
        self._node_ledgers: dict[tuple[str, int], AckLedger] = {}
        self._maps = LoopStates(lambda: ClusterMap(self.cluster_spec, self._node_ledgers))

    # -- names and keys ------------------------------------------------------------------------

    def _map(self) -> ClusterMap:
        return self._maps.get()

    async def _ready(self) -> ClusterMap:
        cluster = self._map()
        if not cluster.loaded:
            await cluster.refresh()
        return cluster

    def _tagged_queue_keys(self, channel: str) -> tuple[int, list[str]]:
        """(bucket, [queue key, counter key for a process inbox]), all in the bucket's slot."""
        if "!" in channel:
            inbox = non_local_name(channel)
            bucket = bucket_of(inbox)
            tag = hash_tag(bucket)
            return bucket, [self.keys.queue(inbox, tag), self.keys.counters(inbox, tag)]
        bucket = bucket_of(channel)
        return bucket, [self.keys.queue(channel, hash_tag(bucket))]

    def _tagged_group_keys(self, group: str, bucket: int) -> list[str]:
        return self.keys.group(group, hash_tag(bucket))

    def _group_index(self, group: str) -> tuple[int, str]:
        bucket = bucket_of(group)
        return bucket, self.keys.group_index(group, hash_tag(bucket))

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

    # -- the channel layer API -----------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        require_valid_channel_name(channel)
        payload = self.serializer.serialize(require_valid_message(message))
        bucket, keys = self._tagged_queue_keys(channel)
        sent = await self._call(
            bucket,
            SEND,
            keys,
            [channel, payload, self.capacity.for_channel(channel), self.options.expiry_ms],
        )
        if not sent:
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> Message:
        # Refused before anything waits for the cluster (see RedisChannelLayer.receive).
        require_own_channel(require_valid_channel_name(channel), self.client_prefix)
        cluster = self._map()
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
                        self.cluster_spec.describe(),
                        type(exc).__name__,
                        exc,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return await super().receive(channel)

    def _reader(self, channel: str) -> QueueReader:
        cluster = self._map()
        bucket, keys = self._tagged_queue_keys(channel)
        reader = cluster.readers.get(keys[0])
        if reader is None:
            shard = cluster.shard_for(bucket)
            reader = cluster.readers[keys[0]] = (
                InboxReader(
                    shard,
                    *keys,
                    expiry=self.expiry,
                    block_timeout=self.block_timeout,
                    backlog=self._inbox_backlog(keys[0]),
                )
                if len(keys) > 1
                else ChannelReader(
                    shard, keys[0], expiry=self.expiry, block_timeout=self.block_timeout
                )
            )
            reader.relocate = functools.partial(_relocate, cluster, bucket)
        return reader

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        bucket, _ = self._tagged_queue_keys(channel)
        index_bucket, index = self._group_index(group)
        group_expiry = self.options.group_expiry_ms
        # Both, not atomically (two slots): a group_send meanwhile may miss this member, which
        # is fine, as group_add has not returned yet.
        await asyncio.gather(
            self._call(index_bucket, GROUP_INDEX_ADD, [index], [bucket, group_expiry]),
            self._call(
                bucket,
                GROUP_ADD,
                self._tagged_group_keys(group, bucket),
                [channel, self.capacity.for_channel(channel), group_expiry],
            ),
        )

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        bucket, _ = self._tagged_queue_keys(channel)
        # The bucket stays in the group's index until it expires: a group_send then finds no
        # member there, which costs one cheap script call and is never wrong.
        await self._call(bucket, GROUP_DISCARD, self._tagged_group_keys(group, bucket), [channel])

    async def group_send(self, group: str, message: Message) -> None:
        require_valid_group_name(group)
        payload = self.serializer.serialize(require_valid_message(message))
        index_bucket, index = self._group_index(group)
        group_expiry = self.options.group_expiry_ms
        buckets = await self._call(index_bucket, GROUP_BUCKETS, [index], [group_expiry])
        results = await asyncio.gather(
            *(
                self._call(
                    int(b),
                    GROUP_SEND,
                    self._tagged_group_keys(group, int(b)),
                    [
                        self.keys.queue("", hash_tag(int(b))),
                        self.keys.counters("", hash_tag(int(b))),
                        payload,
                        self.options.expiry_ms,
                        group_expiry,
                    ],
                )
                for b in buckets
            )
        )
        _log_full_members(group, results)

    async def flush(self) -> None:
        """Delete every key of this layer's prefix on every master (SCAN, never KEYS)."""
        with translated():
            await self._flush()

    async def _flush(self) -> None:
        cluster = await self._ready()
        self._forget_received()
        for shard in cluster.masters():
            keys = [key async for key in shard.client.scan_iter(self.keys.all(), count=1000)]
            # One key per UNLINK: keys of several slots in one command are a CROSSSLOT error.
            for start in range(0, len(keys), 1000):
                async with shard.client.pipeline(transaction=False) as pipe:
                    for key in keys[start : start + 1000]:
                        pipe.unlink(key)
                    await pipe.execute()

    def _forget_received(self) -> None:
        super()._forget_received()
        for ledger in self._node_ledgers.values():
            ledger.clear()

    async def close(self) -> None:
        """Stop this loop's readers and close its connections (inboxes expire by themselves)."""
        cluster = self._maps.pop()
        if cluster is not None:
            await cluster.teardown()

    # -- servers, for presence and status (see server.py) ----------------------------------------

    async def servers(self) -> list[Server]:
        """Every master of the cluster."""
        with translated():
            cluster = await self._ready()
        return [Server(shard) for shard in cluster.masters()]

    async def locate(self, kind: str, name: str) -> tuple[Server, str]:
        """(the master holding it, the key) for the ``kind`` key of ``name``, hash tag included."""
        bucket = bucket_of(name)
        with translated():
            cluster = await self._ready()
        return Server(cluster.shard_for(bucket)), self.keys.key(kind, name, hash_tag(bucket))

    def __repr__(self) -> str:
        return f"<RedisChannelLayer prefix={self.prefix!r} cluster={self.cluster_spec.describe()}>"


async def _relocate(cluster: ClusterMap, bucket: int) -> Shard:
    await cluster.refresh()
    return cluster.shard_for(bucket)
