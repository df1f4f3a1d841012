"""Several hosts: consistent hashing, and every message lands where its receiver pops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.hashring import HashRing
from distributed_asgi.redis_process import RedisProcess


def test_ring_spreads_names_and_moves_few_when_a_host_is_added() -> None:
    three = HashRing(["a", "b", "c"])
    four = HashRing(["a", "b", "c", "d"])
    names = [f"channel.{i}" for i in range(20_000)]
    counts = [0, 0, 0]
    moved = 0
    for name in names:
        shard = three.shard_for(name)
        counts[shard] += 1
        if four.shard_for(name) != shard:
            assert four.shard_for(name) == 3  # names only ever move to the new host
            moved += 1
    assert min(counts) > 0.25 * len(names)
    assert 0.15 < moved / len(names) < 0.35  # about a quarter, not most of them


def test_ring_does_not_depend_on_host_order() -> None:
    forward, backward = HashRing(["a", "b", "c"]), HashRing(["c", "b", "a"])
    ids = ["a", "b", "c"]
    back_ids = ["c", "b", "a"]
    for i in range(2000):
        name = f"n{i}"
        assert ids[forward.shard_for(name)] == back_ids[backward.shard_for(name)]


async def test_three_shards_deliver_everything(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    servers = [redis_factory() for _ in range(3)]
    urls = [s.url for s in servers]
    # The receiver lists the hosts in another order: placement must not depend on it.
    sender = RedisChannelLayer(hosts=urls)
    receiver = RedisChannelLayer(hosts=list(reversed(urls)))
    try:
        channels = [await receiver.new_channel(f"p{i}") for i in range(30)]
        normal = [f"test.normal{i}" for i in range(30)]
        for channel in channels + normal:
            await receiver.group_add("spread", channel)
            await sender.send(channel, {"direct": channel})
        await sender.group_send("spread", {"group": True})
        for channel in channels + normal:
            assert await asyncio.wait_for(receiver.receive(channel), 5) == {"direct": channel}
            assert await asyncio.wait_for(receiver.receive(channel), 5) == {"group": True}
        # Traffic really went to all three servers, and nothing is left on any of them.
        for server in servers:
            client = aioredis.Redis.from_url(server.url)
            stats = await client.info("commandstats")
            assert int(stats["cmdstat_evalsha"]["calls"]) > 5
            leftover = [k async for k in client.scan_iter(match="asgi:q:*") if await client.llen(k)]
            assert leftover == []
            await client.aclose()
    finally:
        await sender.close()
        await receiver.close()
