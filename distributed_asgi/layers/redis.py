"""``RedisChannelLayer``: the Django Channels layer API over one or more Redis servers.

Every operation is one script call on one shard (``group_send``: one per shard, concurrently),
batched with whatever else the process is sending at that moment. State that belongs to an
event loop (connections, readers) is kept per loop, so the layer also works from
``async_to_sync`` in threads, which run their own loops.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from .base import (
    CapacityRules,
    ChannelFull,
    Message,
    non_local_name,
    require_positive_seconds,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
)
from .hashring import HashRing
from .hosts import HostSpec, parse_hosts
from .queue_reader import ChannelReader, InboxReader, QueueReader
from .scripts import GROUP_ADD, GROUP_DISCARD, GROUP_SEND, SEND
from .serialization import DEFAULT_MAX_MESSAGE_SIZE, BadMessage, MessageSerializer
from .shard import Shard

__all__ = ["RedisChannelLayer"]

logger = logging.getLogger("distributed_asgi.layers")

# How long one blocking wait lasts before the reader checks in; kept under any socket timeout
# so an idle receive() is never mistaken for a dead connection.
DEFAULT_BLOCK_TIMEOUT = 5.0


class _LoopState:
    """Connections and readers of one layer in one event loop."""

    def __init__(self, specs: Sequence[HostSpec]) -> None:
        self.shards = [Shard(spec) for spec in specs]
        self.readers: dict[str, QueueReader] = {}


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
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[str | re.Pattern[str], int] | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        host: str | None = None,
        port: int | str | None = None,
        db: int | None = None,
        password: str | None = None,
    ) -> None:
        if host is not None or port is not None or db is not None or password is not None:
            # asgi_redis style: RedisChannelLayer(host="redis", db=4).
            if hosts is not None:
                raise ValueError("pass either hosts or host/port/db/password, not both")
            single: dict[str, Any] = {"host": host or "localhost", "port": port or 6379}
            if db is not None:
                single["db"] = db
            if password is not None:
                single["password"] = password
            hosts = [single]
        self.hosts = parse_hosts(hosts)
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"prefix must be a non-empty string without spaces, got {prefix!r}")
        self.prefix = prefix
        self.expiry = require_positive_seconds("expiry", expiry)
        self.group_expiry = require_positive_seconds("group_expiry", group_expiry)
        self.capacity = CapacityRules(capacity, channel_capacity)
        self.serializer = MessageSerializer(symmetric_encryption_keys, max_message_size)
        self.ring = HashRing([spec.identity for spec in self.hosts])
        self.client_prefix = secrets.token_hex(6)
        self._channel_numbers = itertools.count(1)
        timeouts = [spec.socket_timeout for spec in self.hosts if spec.socket_timeout]
        self.block_timeout = min([DEFAULT_BLOCK_TIMEOUT, *(t / 2 for t in timeouts)])
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    # -- names and keys ------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState(self.hosts)
        return state

    def _queue_keys(self, channel: str) -> tuple[str, list[str]]:
        """(name the shard is chosen by, [queue key, counter key for a process inbox])."""
        if "!" in channel:
            inbox = non_local_name(channel)
            return inbox, [f"{self.prefix}:q:{inbox}", f"{self.prefix}:n:{inbox}"]
        return channel, [f"{self.prefix}:q:{channel}"]

    def _group_keys(self, group: str) -> list[str]:
        return [f"{self.prefix}:g:{group}", f"{self.prefix}:gc:{group}"]

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
            [channel, payload, self.capacity.for_channel(channel), int(self.expiry * 1000)],
        )
        if not sent:
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``, waiting for one to arrive."""
        require_valid_channel_name(channel)
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
            options = {"expiry": self.expiry, "block_timeout": self.block_timeout}
            reader = state.readers[keys[0]] = (
                InboxReader(shard, keys[0], keys[1], **options)
                if len(keys) > 1
                else ChannelReader(shard, keys[0], **options)
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
            [channel, self.capacity.for_channel(channel), int(self.group_expiry * 1000)],
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
        args = [self.prefix, payload, int(self.expiry * 1000), int(self.group_expiry * 1000)]
        keys = self._group_keys(group)
        results = await asyncio.gather(
            *(shard.call(GROUP_SEND, keys, args) for shard in self._state().shards)
        )
        _log_full_members(group, results)

    async def flush(self) -> None:
        """Delete every key of this layer's prefix on every shard (SCAN, never KEYS)."""
        state = self._state()
        for reader in state.readers.values():
            reader.clear()
        for shard in state.shards:
            batch: list[bytes] = []
            async for key in shard.client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await shard.client.unlink(*batch)
                    batch = []
            if batch:
                await shard.client.unlink(*batch)

    async def close(self) -> None:
        """Stop this loop's readers and close its connections."""
        loop = asyncio.get_running_loop()
        state = self._states.pop(loop, None)
        if state is None:
            return
        for reader in state.readers.values():
            await reader.close()
        if not self._states:  # no other event loop receives on this layer's process channels
            for reader in state.readers.values():
                if isinstance(reader, InboxReader):
                    await reader.delete_keys()
        for shard in state.shards:
            await shard.close()

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
