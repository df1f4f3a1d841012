"""``RedisChannelLayer``: the Django Channels layer API over one or more Redis servers.

Every operation is one script call on one shard (``group_send``: one per shard, concurrently),
batched with whatever else the process is sending at that moment. State that belongs to an
event loop (connections, reader tasks) is kept per loop and torn down when the loop ends (see
loops.py), so the layer also works from ``async_to_sync`` in threads, which run a new loop per
call. What must outlive a loop is kept by the layer: the entries popped and not yet received
(one ``Backlog`` per queue) and the acks not yet written (one ``AckLedger`` per server).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .backlog import Backlog
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
from .hashring import HashRing
from .hosts import HostSpec, parse_hosts, single_host
from .inbox_reader import InboxReader
from .keys import QUEUE, KeySpace
from .loops import LoopStates
from .options import LayerOptions
from .queue_reader import RECEIVE_ERRORS, QueueReader
from .scripts import GROUP_ADD, GROUP_DISCARD, GROUP_SEND, SEND
from .serialization import BadMessage
from .server import Server
from .shard import AckLedger, Shard, translated

__all__ = ["RedisChannelLayer"]

logger = logging.getLogger("distributed_asgi.layers")

# How long one blocking wait lasts before the reader checks in; kept under any socket timeout
# so an idle receive() is never mistaken for a dead connection.
DEFAULT_BLOCK_TIMEOUT = 5.0


class _LoopState:
    """Connections and readers of one layer in one event loop."""

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


class RedisChannelLayer:
    """A Redis-backed channel layer; see docs/layer.md for every option.

    >>> layer = RedisChannelLayer(hosts=["redis://localhost:6379/0"])
    """

    extensions = ["groups", "flush"]

    def __new__(cls, *args: Any, **kwargs: Any) -> RedisChannelLayer:
        # A Redis Cluster entry in hosts selects the cluster implementation, so settings
        # (CHANNEL_LAYERS, Node(url=...)) switch to a cluster by changing the URL alone.
        if cls is RedisChannelLayer and _names_a_cluster(args[0] if args else kwargs.get("hosts")):
            from .cluster import RedisClusterChannelLayer

            return super().__new__(RedisClusterChannelLayer)
        return super().__new__(cls)

    def __init__(
        self,
        hosts: object = None,
        prefix: str = LayerOptions.prefix,
        expiry: float = LayerOptions.expiry,
        group_expiry: float = LayerOptions.group_expiry,
        capacity: int = LayerOptions.capacity,
        channel_capacity: Mapping[str | re.Pattern[str], int] | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        *,
        max_message_size: int | None = LayerOptions.max_message_size,
        host: str | None = None,
        port: int | str | None = None,
        db: int | None = None,
        password: str | None = None,
    ) -> None:
        options = LayerOptions(
            prefix=prefix,
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            symmetric_encryption_keys=symmetric_encryption_keys,
            max_message_size=max_message_size,
        )
        self._setup(single_host(hosts, host, port, db, password), options)

    @classmethod
    def from_options(cls, hosts: object, options: LayerOptions) -> RedisChannelLayer:
        """A layer with options already validated (the local+central layer makes two)."""
        layer = cls.__new__(cls, hosts)
        layer._setup(hosts, options)
        return layer

    def _setup(self, hosts: object, options: LayerOptions) -> None:
        self.hosts = parse_hosts(hosts)
        self.options = options
        self.prefix = options.prefix
        self.keys = KeySpace(options.prefix)
        self.expiry = options.expiry
        self.group_expiry = options.group_expiry
        self.capacity = options.capacities
        self.serializer = options.serializer
        self.ring = HashRing([spec.identity for spec in self.hosts])
        self.client_prefix = secrets.token_hex(6)
        self._channel_numbers = itertools.count(1)
        timeouts = [spec.socket_timeout for spec in self.hosts if spec.socket_timeout]
        self.block_timeout = min([DEFAULT_BLOCK_TIMEOUT, *(t / 2 for t in timeouts)])
        # Outlive any one event loop: entries popped and not yet received (per queue key) and
        # acks not yet written (per server). A process inbox's backlog is shared by the
        # readers of every loop.
        self._backlogs: dict[str, Backlog] = {}
        self._ledgers = [AckLedger() for _ in self.hosts]
        self._loops = LoopStates(lambda: _LoopState(self.hosts, self._ledgers))

    # -- names and keys ------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        return self._loops.get()

    def _inbox_backlog(self, queue_key: str) -> Backlog:
        backlog = self._backlogs.get(queue_key)
        if backlog is None:
            backlog = self._backlogs.setdefault(queue_key, Backlog(self.expiry))
        return backlog

    def _queue_keys(self, channel: str) -> tuple[str, list[str]]:
        """(name the shard is chosen by, [queue key, counter key for a process inbox])."""
        if "!" in channel:
            inbox = non_local_name(channel)
            return inbox, [self.keys.queue(inbox), self.keys.counters(inbox)]
        return channel, [self.keys.queue(channel)]

    def _group_keys(self, group: str) -> list[str]:
        return self.keys.group(group)

    # -- the channel layer API -----------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Send ``message`` to ``channel``; raise ``ChannelFull`` if it is at capacity."""
        require_valid_channel_name(channel)
        payload = self.serializer.serialize(require_valid_message(message))
        shard_name, keys = self._queue_keys(channel)
        shard = self._state().shards[self.ring.shard_for(shard_name)]
        sent = await shard.call(
            SEND,
            keys,
            [channel, payload, self.capacity.for_channel(channel), self.options.expiry_ms],
        )
        if not sent:
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``, waiting for one to arrive.

        A process-specific channel must be one this instance's ``new_channel()`` made:
        ``WrongClientPrefix`` (an ``AssertionError``) otherwise, as in channels_redis, since
        its messages belong to the instance that reads that inbox.
        """
        require_own_channel(require_valid_channel_name(channel), self.client_prefix)
        reader = self._reader(channel)
        while True:
            payload = await reader.get(channel)
            try:
                return self.serializer.deserialize(payload)
            except BadMessage as exc:
                logger.warning("dropped a message on %s: %s", channel, exc)

    def _reader(self, channel: str) -> QueueReader:
        state = self._state()
        shard_name, keys = self._queue_keys(channel)
        reader = state.readers.get(keys[0])
        if reader is None:
            shard = state.shards[self.ring.shard_for(shard_name)]
            reader = state.readers[keys[0]] = (
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
        return reader

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-specific channel name; all of them share this process's inbox."""
        # client_prefix is random per layer; within it a counter is unique, and costs no
        # getrandom() system call per name (one per request at the edge and at the Node).
        return f"{prefix}.{self.client_prefix}!{next(self._channel_numbers):x}"

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        shard = self._member_shard(channel)
        await shard.call(
            GROUP_ADD,
            self._group_keys(group),
            [channel, self.capacity.for_channel(channel), self.options.group_expiry_ms],
        )

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        await self._member_shard(channel).call(GROUP_DISCARD, self._group_keys(group), [channel])

    def _member_shard(self, channel: str) -> Shard:
        # Membership is stored beside the member's queue, so group_send writes locally.
        shard_name, _ = self._queue_keys(channel)
        return self._state().shards[self.ring.shard_for(shard_name)]

    async def group_send(self, group: str, message: Message) -> None:
        """Send to every member; members at capacity are skipped (and counted in the log)."""
        require_valid_group_name(group)
        payload = self.serializer.serialize(require_valid_message(message))
        args = [
            self.keys.queue(""),
            self.keys.counters(""),
            payload,
            self.options.expiry_ms,
            self.options.group_expiry_ms,
        ]
        keys = self._group_keys(group)
        results = await asyncio.gather(
            *(shard.call(GROUP_SEND, keys, args) for shard in self._state().shards)
        )
        _log_full_members(group, results)

    async def flush(self) -> None:
        """Delete every key of this layer's prefix on every shard (SCAN, never KEYS)."""
        state = self._state()
        self._forget_received()
        with translated():
            for shard in state.shards:
                batch: list[bytes] = []
                async for key in shard.client.scan_iter(match=self.keys.all(), count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        await shard.client.unlink(*batch)
                        batch = []
                if batch:
                    await shard.client.unlink(*batch)

    def _forget_received(self) -> None:
        """Drop what was popped and not received, and the acks not yet written (their
        counters are about to be deleted: an ack written after would re-create them)."""
        for backlog in self._backlogs.values():
            backlog.clear()
        for ledger in self._ledgers:
            ledger.clear()

    async def close(self) -> None:
        """Stop this loop's readers and close its connections. When no other event loop uses
        the layer, also delete the process inboxes: no one else reads them, and keys left to
        expire would outlive the process."""
        state = self._loops.pop()
        last = not self._loops.others()
        if state is None:
            if not (last and self._backlogs):
                return
            state = _LoopState(self.hosts, self._ledgers)  # a loop that only closes
        await state.stop_readers()
        if last and self._backlogs:
            await self._delete_inboxes(state)
        await state.close_shards()

    async def _delete_inboxes(self, state: _LoopState) -> None:
        inboxes = list(self._backlogs)
        self._backlogs.clear()
        for queue_key in inboxes:
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

    # -- servers, for presence and status (see server.py) ----------------------------------------

    async def servers(self) -> list[Server]:
        """Every server this layer writes to (each shard)."""
        return [Server(shard) for shard in self._state().shards]

    async def locate(self, kind: str, name: str) -> tuple[Server, str]:
        """(the server holding it, the key) for the ``kind`` key (``"q"``, ``"node"``) of a name."""
        placed = f"node:{name}" if kind == "node" else non_local_name(name)
        return Server(self._state().shards[self.ring.shard_for(placed)]), self.keys.key(kind, name)

    def __repr__(self) -> str:
        hosts = ", ".join(spec.describe() for spec in self.hosts)
        return f"<RedisChannelLayer prefix={self.prefix!r} hosts=[{hosts}]>"


def _names_a_cluster(hosts: object) -> bool:
    try:
        return any(spec.cluster for spec in parse_hosts(hosts))
    except ValueError:
        return False  # __init__ parses again and raises with the message


def _log_full_members(group: str, results: Sequence[Any]) -> None:
    """Warn about the members a group_send skipped (GROUP_SEND results: sent, full, names)."""
    full = sum(int(result[1]) for result in results)
    if full:
        names = [n.decode() for result in results for n in result[2:]]
        logger.warning(
            "group_send to %r skipped %d member(s) at capacity: %s%s",
            group,
            full,
            ", ".join(names),
            ", ..." if len(names) < full else "",
        )
