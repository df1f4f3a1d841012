"""``RedisChannelLayer``: the Django Channels layer API over one or more Redis servers.

Every operation is one call where its name's keys live (``group_send``: one per place that may
hold members, concurrently), batched with whatever else the process is sending at that moment:
a script, or plain commands where no script is needed (``push``; ``send`` to a normal channel,
whose capacity a script decides only when its queue is over it). Where keys live is the
placement's (placement.py): a ring of shards, or a Redis Cluster's slots (cluster.py), chosen
from ``hosts``; key names are keys.py's. State that belongs to an event loop (connections, reader
tasks) is kept per loop and torn down when the loop ends (see loops.py), so the layer also
works from ``async_to_sync`` in threads, which run a new loop per call. What must outlive a
loop is kept by the layer: the entries popped and not yet received (one ``Backlog`` per
queue), and by the placement: the acks not yet written (one ``AckLedger`` per server).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from .backlog import Backlog
from .base import (
    ChannelFull,
    Message,
    non_local_name,
    require_own_channel,
    require_process_channel,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
    valid_after_inbox,
)
from .batch import COMMAND, COMMANDS
from .channel_reader import ChannelReader
from .clock import ServerClock
from .hashring import HashRing
from .hosts import HostSpec, parse_hosts, single_host
from .inbox_reader import InboxReader
from .keys import CLAIM, KeySpace, entry
from .options import LayerOptions
from .placement import Placement, RingPlacement
from .queue_reader import QueueReader
from .scripts import GROUP_ADD, GROUP_DISCARD, GROUP_SEND, OVERFLOW, SEND, skipped_members
from .serialization import BadMessage
from .server import Server
from .shard import translated

__all__ = ["RedisChannelLayer"]

logger = logging.getLogger("distributed_asgi.layers")

# How long one blocking wait lasts before the reader checks in; kept under any socket timeout
# so an idle receive() is never mistaken for a dead connection.
DEFAULT_BLOCK_TIMEOUT = 5.0
# Channel routes remembered (see RedisChannelLayer._routes).
ROUTES_KEPT = 10_000


class RedisChannelLayer:
    """A Redis-backed channel layer; see docs/layer.md for every option.

    >>> layer = RedisChannelLayer(hosts=["redis://localhost:6379/0"])
    """

    extensions = ["groups", "flush"]

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
        layer = cls.__new__(cls)
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
        self.placement = self._placement(self.hosts)
        self.clock = ServerClock(self._server_time)
        self.client_prefix = secrets.token_hex(6)
        self._channel_numbers = itertools.count(1)
        timeouts = [spec.socket_timeout for spec in self.hosts if spec.socket_timeout]
        self.block_timeout = min([DEFAULT_BLOCK_TIMEOUT, *(t / 2 for t in timeouts)])
        # Outlives any one event loop: entries popped and not yet received, per queue key. A
        # process inbox's backlog is shared by the readers of every loop.
        self._backlogs: dict[str, Backlog] = {}
        # channel -> (place, keys, capacity) of the valid names used lately: where a send goes
        # is the same every time, and working it out costs more than the rest of send().
        self._routes: dict[str, tuple[int, list[str], int]] = {}
        # process part ("edge.abc!") -> (place, keys) of process-specific names: a name per
        # request (a reply channel) shares its inbox's keys, so pushes and receives on it
        # cost a check of the part after "!", not a route worked out anew.
        self._inboxes: dict[str, tuple[int, list[str]]] = {}
        # The process parts of this instance's own names seen by receive() (its client prefix
        # checked once per part, not on every receive).
        self._own_inboxes: set[str] = set()

    def _placement(self, specs: Sequence[HostSpec]) -> Placement:
        # A Redis Cluster entry in hosts (parse_hosts allows it only alone) selects the slot
        # placement, so settings (CHANNEL_LAYERS, Node(url=...)) switch by the URL alone.
        if specs[0].cluster:
            from .cluster import ClusterPlacement

            return ClusterPlacement(specs[0], self.keys)
        return RingPlacement(specs, self.keys)

    def _server_time(self, place: int) -> Awaitable[Any]:
        return self.placement.call(place, COMMAND, (), ["TIME"])

    @property
    def ring(self) -> HashRing:
        """The hash ring that places names on the shards (not on a Redis Cluster)."""
        if not isinstance(self.placement, RingPlacement):
            raise AttributeError("a layer on a Redis Cluster has no hash ring: slots place keys")
        return self.placement.ring

    # -- names and keys ------------------------------------------------------------------------

    def _inbox_backlog(self, queue_key: str) -> Backlog:
        backlog = self._backlogs.get(queue_key)
        if backlog is None:
            backlog = self._backlogs.setdefault(queue_key, Backlog(self.expiry))
        return backlog

    def _route(self, channel: str) -> tuple[int, list[str], int]:
        """(place, queue keys, capacity) of ``channel``; ``TypeError`` for a bad name."""
        route = self._routes.get(channel)
        if route is None:
            require_valid_channel_name(channel)
            place, keys = self._queue_keys(channel)
            route = (place, keys, self.capacity.for_channel(channel))
            if len(self._routes) >= ROUTES_KEPT:
                self._routes.clear()  # names come and go (a channel per request): start over
            self._routes[channel] = route
        return route

    def _inbox_route(self, channel: str) -> tuple[int, list[str]]:
        """(place, queue keys) of ``channel`` for a push or a receive (no capacity needed);
        ``TypeError`` for a bad name."""
        bang = channel.find("!") if isinstance(channel, str) else -1
        if bang < 0:
            place, keys, _ = self._route(channel)  # TypeError for a name that is not a str
            return place, keys
        inbox = channel[: bang + 1]
        route = self._inboxes.get(inbox)
        if route is not None and valid_after_inbox(channel, bang):
            return route  # the part before "!" passed the name check with the route's first name
        require_valid_channel_name(channel)
        if route is None:
            route = self._queue_keys(inbox)
            if len(self._inboxes) >= ROUTES_KEPT:
                self._inboxes.clear()
            self._inboxes[inbox] = route
        return route

    def _queue_keys(self, channel: str) -> tuple[int, list[str]]:
        """(place, [queue key, counter key for a process inbox]) of ``channel``."""
        placement = self.placement
        if "!" in channel:
            inbox = non_local_name(channel)
            place = placement.place(inbox)
            tag = placement.tag(place)
            return place, [self.keys.queue(inbox, tag), self.keys.counters(inbox, tag)]
        place = placement.place(channel)
        return place, [self.keys.queue(channel, placement.tag(place))]

    # -- the channel layer API -----------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Send ``message`` to ``channel``; raise ``ChannelFull`` if it is at capacity.

        To a process-specific channel: one script call (its capacity is counted in its inbox's
        counters). To a normal channel: a plain ``RPUSH`` and ``PEXPIRE``, batched (and merged)
        with this process's other pushes to that queue; the length ``RPUSH`` returns says
        whether the queue is within its capacity, and only when it is not does a second call
        (``OVERFLOW``) decide, taking the entry back if the queue is still full. So capacity is
        exact, and the common send runs no script.
        """
        place, keys, capacity = self._route(channel)
        payload = self.serializer.serialize(require_valid_message(message))
        expiry = self.options.expiry_ms
        if len(keys) > 1:
            sent = await self.placement.call(
                place, SEND, keys, [channel, payload, capacity, expiry]
            )
        else:
            stamp = self.clock.now_ms(place)
            if stamp is None:
                stamp = await self.clock.sync(place)
            pushed = entry(stamp, channel, payload)
            length = (await self._push(place, keys[0], pushed))[0]
            sent = length <= capacity or await self.placement.call(
                place, OVERFLOW, keys, [pushed, capacity, expiry]
            )
        if not sent:
            raise ChannelFull(channel)

    async def push(self, channel: str, message: Message) -> None:
        """Send to a process-specific channel without capacity: never ``ChannelFull``.

        For traffic whose flow is controlled end to end (the gateway's credit window per
        connection), which needs no capacity in Redis: two plain commands (``RPUSH``,
        ``PEXPIRE`` of the inbox), batched in call order with this process's other calls, so a
        push and a send issued one after the other land in that order. The entry is marked
        uncounted (keys.py); it expires like any other.
        A normal channel is a ``ValueError``: route channels keep their capacity (``send``).
        """
        place, keys = self._inbox_route(channel)
        require_process_channel(channel, "push")
        payload = self.serializer.serialize(require_valid_message(message))
        stamp = self.clock.now_ms(place)
        if stamp is None:
            stamp = await self.clock.sync(place)
        await self._push(place, keys[0], entry(stamp, channel, payload, counted=False))

    def _push(self, place: int, queue: str, pushed: bytes) -> Awaitable[list[Any]]:
        """``RPUSH`` an entry stamped with its server's time (clock.py) and ``PEXPIRE`` its
        queue: the two replies (the queue's length just after the entry, and 1)."""
        commands = [("RPUSH", queue, pushed), ("PEXPIRE", queue, self.options.expiry_ms)]
        if self.clock.due(place):
            return self._push_checking_clock(place, commands)
        # The placement's own awaitable, not a coroutine around it: nothing added per push.
        return self.placement.call(place, COMMANDS, (), commands)

    async def _push_checking_clock(self, place: int, commands: Sequence[Any]) -> list[Any]:
        """The push's commands with a ``TIME``, whose reply renews the clock's offset."""
        asked = time.time()
        replies: list[Any] = await self.placement.call(place, COMMANDS, (), [*commands, ("TIME",)])
        self.clock.heard(place, replies[2], asked)
        return replies

    async def claim(self, channel: str, holder: str, ttl: float) -> str | None:
        """Claim ``channel`` (a process-specific name) for ``holder``, for ``ttl`` seconds:
        None when this call got it, else the holder's value ("" if it expired meanwhile).

        One ``SET NX PX`` on the channel's server (a ``GET`` more when another holds it), so
        the edge and the Node, which both know the reply channel of a connection, agree on who
        decides it (docs/PROTOCOL.md). ``LayerUnavailable``/``LayerRefused`` as ``send``.
        """
        place, key = self._claim_key(channel)
        ms = max(1, int(ttl * 1000))
        if await self.placement.call(place, COMMAND, (), ["SET", key, holder, "NX", "PX", ms]):
            return None
        held = await self._claim_value(place, key)
        return "" if held is None else held

    async def holder(self, channel: str) -> str | None:
        """The value of the claim on ``channel`` (one ``GET``); None while nobody holds it."""
        return await self._claim_value(*self._claim_key(channel))

    async def _claim_value(self, place: int, key: str) -> str | None:
        held = await self.placement.call(place, COMMAND, (), ["GET", key])
        return None if held is None else bytes(held).decode()

    def _claim_key(self, channel: str) -> tuple[int, str]:
        """(place, key) of the claim on ``channel``: on its inbox's server."""
        place, _ = self._inbox_route(require_process_channel(channel, "claim"))
        return place, self.keys.key(CLAIM, channel, self.placement.tag(place))

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``, waiting for one to arrive.

        A process-specific channel must be one this instance's ``new_channel()`` made:
        ``WrongClientPrefix`` (an ``AssertionError``) otherwise, as in channels_redis, since
        its messages belong to the instance that reads that inbox. Refused before anything
        waits for a server.
        """
        place, keys = self._inbox_route(channel)
        if keys[0] not in self._own_inboxes:
            require_own_channel(channel, self.client_prefix)
            if len(keys) > 1:  # a process inbox: this instance's (its name part checked)
                self._own_inboxes.add(keys[0])
        reader = self.placement.readers().get(keys[0])
        if reader is None:
            reader = await self._reader(place, keys)
        while True:
            payload = await reader.get(channel)
            try:
                return self.serializer.deserialize(payload)
            except BadMessage as exc:
                logger.warning("dropped a message on %s: %s", channel, exc)

    async def _reader(self, place: int, keys: list[str]) -> QueueReader:
        shard, relocate = await self.placement.reader_home(place)
        readers = self.placement.readers()  # this loop's, once the placement is ready
        reader = readers.get(keys[0])
        if reader is None:
            reader = readers[keys[0]] = (
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
            reader.relocate = relocate
        return reader

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-specific channel name; all of them share this process's inbox."""
        # client_prefix is random per layer; within it a counter is unique, and costs no
        # getrandom() system call per name (one per request at the edge and at the Node).
        return f"{prefix}.{self.client_prefix}!{next(self._channel_numbers):x}"

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        # Membership is stored beside the member's queue, so group_send writes locally.
        place, _ = self._queue_keys(channel)
        group_expiry = self.options.group_expiry_ms
        add = self.placement.call(
            place,
            GROUP_ADD,
            self.keys.group(group, self.placement.tag(place)),
            [channel, self.capacity.for_channel(channel), group_expiry],
        )
        index = self.placement.index_group(group, place, group_expiry)
        if index is None:
            await add
        else:
            # Both, not atomically (two places): a group_send meanwhile may miss this member,
            # which is fine, as group_add has not returned yet.
            await asyncio.gather(index, add)

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        place, _ = self._queue_keys(channel)
        # A place stays in a group's index until it expires: a group_send then finds no member
        # there, which costs one cheap script call and is never wrong.
        await self.placement.call(
            place, GROUP_DISCARD, self.keys.group(group, self.placement.tag(place)), [channel]
        )

    async def group_send(self, group: str, message: Message) -> None:
        """Send to every member; members at capacity are skipped (and counted in the log)."""
        require_valid_group_name(group)
        payload = self.serializer.serialize(require_valid_message(message))
        expiry, group_expiry = self.options.expiry_ms, self.options.group_expiry_ms
        placement = self.placement
        places = await placement.group_places(group, group_expiry)
        calls = [
            placement.call(
                place,
                GROUP_SEND,
                self.keys.group(group, placement.tag(place)),
                [
                    self.keys.queue("", placement.tag(place)),
                    self.keys.counters("", placement.tag(place)),
                    payload,
                    expiry,
                    group_expiry,
                ],
            )
            for place in places
        ]
        # One place (one server): awaited here, without the task gather() would wrap it in.
        results = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        skipped = skipped_members(group, results)
        if skipped:
            logger.warning("%s", skipped)

    async def flush(self) -> None:
        """Delete every key of this layer's prefix on every server (SCAN, never KEYS)."""
        with translated():
            shards = await self.placement.shards()
            self._forget_received()
            for shard in shards:
                batch: list[bytes] = []
                async for key in shard.client.scan_iter(match=self.keys.all(), count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        await self.placement.unlink(shard, batch)
                        batch = []
                if batch:
                    await self.placement.unlink(shard, batch)

    def _forget_received(self) -> None:
        """Drop what was popped and not received, and the acks not yet written (their
        counters are about to be deleted: an ack written after would re-create them)."""
        for backlog in self._backlogs.values():
            backlog.clear()
        self.placement.forget_acks()

    async def close(self) -> None:
        """Stop this loop's readers and close its connections (on a ring of shards, the last
        loop to close also deletes the process inboxes; see placement.py)."""
        await self.placement.close(self._backlogs)

    # -- servers, for presence and status (see server.py) ----------------------------------------

    async def servers(self) -> list[Server]:
        """Every server this layer writes to (each shard, every master of a cluster)."""
        with translated():
            return [Server(shard) for shard in await self.placement.shards()]

    async def locate(self, kind: str, name: str) -> tuple[Server, str]:
        """(the server holding it, the key) for the ``kind`` key (``"q"``, ``"node"``) of a
        name, hash tag included on a cluster."""
        place = self.placement.place_key(kind, name)
        with translated():
            shard = await self.placement.shard(place)
        return Server(shard), self.keys.key(kind, name, self.placement.tag(place))

    def __repr__(self) -> str:
        return f"<RedisChannelLayer prefix={self.prefix!r} {self.placement.describe()}>"
