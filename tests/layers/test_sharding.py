"""Several hosts: consistent hashing, and every message lands where its receiver pops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.hashring import HashRing
from distributed_asgi.ops.redis_process import RedisProcess


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


# One server's two databases, in each form of a hosts entry (host, port, unix socket path, db).
DB_HOSTS: dict[str, Callable[[str, int, str, int], object]] = {
    "url": lambda h, p, s, db: f"redis://{h}:{p}/{db}",
    "dict": lambda h, p, s, db: {"host": h, "port": p, "db": db},
    "address url": lambda h, p, s, db: {"address": f"redis://{h}:{p}", "db": db},
    "address pair": lambda h, p, s, db: {"address": (h, p), "db": db},
    "address unix url": lambda h, p, s, db: {"address": f"unix://{s}", "db": db},
}


@pytest.mark.parametrize("form", DB_HOSTS.values(), ids=DB_HOSTS.keys())
async def test_two_databases_of_one_server_are_two_shards(
    redis_factory: Callable[..., RedisProcess],
    prefix: str,
    form: Callable[[str, int, str, int], object],
) -> None:
    server = redis_factory(unix_socket=True)
    assert server.unix_socket_path is not None
    where = ("127.0.0.1", server.port, server.unix_socket_path)
    layer = RedisChannelLayer(hosts=[form(*where, 0), form(*where, 1)], prefix=prefix)
    try:
        channels = [f"test.db{i}" for i in range(40)]
        channels += [await layer.new_channel(f"p{i}") for i in range(20)]
        for channel in channels:
            await layer.send(channel, {"to": channel})
        for db in (0, 1):
            client = aioredis.Redis(host="127.0.0.1", port=server.port, db=db)
            queues = [key async for key in client.scan_iter(match=f"{prefix}:q:*")]
            await client.aclose()
            assert len(queues) > 5, f"db {db} holds {len(queues)} queues"
        for channel in channels:
            assert await asyncio.wait_for(layer.receive(channel), 5) == {"to": channel}
    finally:
        await layer.flush()
        await layer.close()
