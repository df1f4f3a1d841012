"""``push()``: sends to process-specific channels that take no capacity, on every layer kind.

The contract (every kind of ``make_layer``): never ``ChannelFull``, order kept with ``send()``
from the same process, expiry as for ``send()``, nothing lost on a cancelled receive, normal
channels refused. On Redis: exactly ``RPUSH`` + ``PEXPIRE`` per push, no counter field, no ack
on receipt, so ``send()`` capacity of the same channel stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from distributed_asgi.layers import (
    ChannelFull,
    InMemoryChannelLayer,
    LayerRefused,
    LayerUnavailable,
    RedisChannelLayer,
    RedisLocalChannelLayer,
)
from distributed_asgi.layers.keys import entry
from distributed_asgi.layers.server import Server
from distributed_asgi.ops.redis_process import RedisProcess
from tests.layers.conftest import LayerFactory, assert_cancelled_receives_lose_nothing


def _inbox_layer(layer: Any) -> RedisChannelLayer:
    """The Redis layer that holds process inboxes (the central one of a local layer)."""
    if isinstance(layer, InMemoryChannelLayer):
        pytest.skip("the in-memory layer has no Redis keys")
    return layer.central if isinstance(layer, RedisLocalChannelLayer) else layer


async def _inbox_keys(layer: Any, channel: str) -> tuple[Server, str, str]:
    """(server, queue key, counter key) of ``channel``'s process inbox."""
    redis_layer = _inbox_layer(layer)
    place, (queue, counters) = redis_layer._queue_keys(channel)
    return Server(await redis_layer.placement.shard(place)), queue, counters


async def _receive(layer: Any, channel: str, count: int) -> list[Any]:
    return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(count)]


async def test_push_beyond_capacity_succeeds_and_arrives_in_order(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(capacity=3)
    channel = await layer.new_channel()
    for i in range(20):
        await layer.push(channel, {"i": i})
    assert [m["i"] for m in await _receive(layer, channel, 20)] == list(range(20))


async def test_pushes_and_sends_keep_their_order(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=1000)
    channel = await layer.new_channel()
    # Awaited one after the other.
    for i in range(40):
        await (layer.push if i % 3 else layer.send)(channel, {"i": i})
    assert [m["i"] for m in await _receive(layer, channel, 40)] == list(range(40))
    # Issued together: they ride the shard's batches in call order.
    await asyncio.gather(
        *((layer.push if i % 2 else layer.send)(channel, {"i": i}) for i in range(200))
    )
    assert [m["i"] for m in await _receive(layer, channel, 200)] == list(range(200))


async def test_pushes_leave_send_capacity_exact(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=2)
    channel = await layer.new_channel()
    for _ in range(2):  # the second time: capacity is exact again after everything was received
        await layer.send(channel, {"sent": 1})
        await layer.send(channel, {"sent": 2})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"sent": 3})
        for i in range(5):
            await layer.push(channel, {"pushed": i})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"sent": 3})
        assert await _receive(layer, channel, 7) == [
            {"sent": 1},
            {"sent": 2},
            *({"pushed": i} for i in range(5)),
        ]


async def test_pushes_hold_no_capacity_before_they_are_received(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=2)
    channel = await layer.new_channel()
    for i in range(5):
        await layer.push(channel, {"pushed": i})
    await layer.send(channel, {"sent": 1})
    await layer.send(channel, {"sent": 2})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"sent": 3})
    received = await _receive(layer, channel, 7)
    assert received == [*({"pushed": i} for i in range(5)), {"sent": 1}, {"sent": 2}]


async def test_received_pushes_leave_no_counter_field(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel, counted = await layer.new_channel(), await layer.new_channel()
    server, _, counters = await _inbox_keys(layer, channel)
    await layer.send(counted, {"counted": True})  # the inbox's counter hash exists
    for i in range(5):
        await layer.push(channel, {"i": i})
    assert await server.execute(("HEXISTS", counters, channel)) == [0]
    assert len(await _receive(layer, channel, 5)) == 5
    assert await _receive(layer, counted, 1) == [{"counted": True}]
    await asyncio.sleep(0.1)  # the ack of the counted one is written without waiting
    (fields,) = await server.execute(("HGETALL", counters))
    assert channel.encode() not in fields
    assert all(b"~" not in field for field in fields)
    assert int(fields.get(counted.encode(), 0)) == 0


async def test_the_inbox_has_a_ttl_after_a_push(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry=30)
    channel = await layer.new_channel()
    server, queue, counters = await _inbox_keys(layer, channel)
    await layer.push(channel, {"n": 1})
    pttl, llen, counters_exist = await server.execute(
        ("PTTL", queue), ("LLEN", queue), ("EXISTS", counters)
    )
    assert 25_000 < pttl <= 30_000
    assert llen == 1
    assert counters_exist == 0  # a push writes no counter hash


async def test_expired_pushes_are_not_delivered(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry=1)
    channel = await layer.new_channel()
    await layer.push(channel, {"old": True})
    await asyncio.sleep(1.3)
    await layer.push(channel, {"old": False})
    assert await _receive(layer, channel, 1) == [{"old": False}]


async def test_a_pushed_entry_older_than_expiry_is_dropped(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry=5, capacity=1)
    channel = await layer.new_channel()
    server, queue, _ = await _inbox_keys(layer, channel)
    payload = _inbox_layer(layer).serializer.serialize({"stale": True})
    stale = entry(int(time.time() * 1000) - 10_000, channel, payload, counted=False)
    await server.execute(("RPUSH", queue, stale))
    await layer.send(channel, {"live": True})
    assert await _receive(layer, channel, 1) == [{"live": True}]
    # Capacity was counted for the sent one only, and given back: exactly one fits again.
    await layer.send(channel, {"live": 2})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"live": 3})


async def test_expired_pushes_trimmed_by_a_full_send_count_nothing_off(
    make_layer: LayerFactory,
) -> None:
    """A send that finds its channel full trims expired entries off the inbox head; pushed ones
    go without touching the counters, the counted one gives back its capacity."""
    layer = make_layer(expiry=5, capacity=1)
    channel = await layer.new_channel()
    server, queue, counters = await _inbox_keys(layer, channel)
    serializer = _inbox_layer(layer).serializer
    old = int(time.time() * 1000) - 10_000
    await server.execute(
        ("RPUSH", queue, entry(old, channel, serializer.serialize({"p": 1}), counted=False)),
        ("RPUSH", queue, entry(old, channel, serializer.serialize({"s": 1}))),
        ("HSET", counters, channel, 1),  # as the send of the counted one left it
    )
    await layer.send(channel, {"fresh": True})  # full: trims both, then fits
    (fields,) = await server.execute(("HGETALL", counters))
    assert fields == {channel.encode(): b"1"}
    assert await _receive(layer, channel, 1) == [{"fresh": True}]


async def test_cancelled_receive_loses_no_pushed_message(make_layer: LayerFactory) -> None:
    layer = make_layer()
    await assert_cancelled_receives_lose_nothing(layer, await layer.new_channel(), layer.push)


async def test_push_refuses_normal_channels_and_bad_arguments(make_layer: LayerFactory) -> None:
    layer = make_layer()
    with pytest.raises(ValueError, match=r"'test\.route'"):
        await layer.push("test.route", {"n": 1})
    with pytest.raises(TypeError):
        await layer.push("bad name!x", {"n": 1})
    with pytest.raises(TypeError):
        await layer.push(await layer.new_channel(), ["not", "a", "dict"])


async def test_two_instances_push(make_layer: LayerFactory) -> None:
    sender, receiver = make_layer(capacity=1), make_layer(capacity=1)
    channel = await receiver.new_channel()
    for i in range(5):
        await sender.push(channel, {"i": i})
    assert [m["i"] for m in await _receive(receiver, channel, 5)] == list(range(5))


# -- Redis only: the commands a push costs, and its errors ------------------------------------


async def _calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name[len("cmdstat_") :]: int(value["calls"]) for name, value in stats.items()}


@contextlib.asynccontextmanager
async def _sender_receiver_admin(
    redis_factory: Callable[..., RedisProcess],
) -> AsyncIterator[tuple[RedisChannelLayer, RedisChannelLayer, aioredis.Redis]]:
    """Two layers on a fresh server (so its command counts are theirs) and a plain client."""
    server = redis_factory()
    sender, receiver = RedisChannelLayer(hosts=[server.url]), RedisChannelLayer(hosts=[server.url])
    admin = aioredis.Redis.from_url(server.url)
    try:
        yield sender, receiver, admin
    finally:
        await sender.close()
        await receiver.close()
        await admin.aclose()


async def test_a_push_is_two_plain_commands_and_its_receipt_writes_nothing(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    async with _sender_receiver_admin(redis_factory) as (sender, receiver, admin):
        channel = await receiver.new_channel()
        await sender.push(channel, {"warm": True})  # connects (CLIENT SETINFO...)
        before = await _calls(admin)
        for i in range(50):
            await sender.push(channel, {"i": i})
        after = await _calls(admin)
        spent = {name: after[name] - before.get(name, 0) for name in after}
        assert {name: n for name, n in spent.items() if n and name != "info"} == {
            "rpush": 50,
            "pexpire": 50,
        }
        # Receiving them pops (BLMOVE, LPOP, TIME rounds) and writes nothing back: no ack.
        before = await _calls(admin)
        assert len(await _receive(receiver, channel, 51)) == 51
        await asyncio.sleep(0.1)
        after = await _calls(admin)
        written = {"hincrby", "hdel", "hget", "evalsha", "rpush", "pexpire"}
        assert {n: after.get(n, 0) - before.get(n, 0) for n in written} == dict.fromkeys(written, 0)


async def test_pushes_to_one_inbox_written_together_are_one_rpush_in_their_order(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    async with _sender_receiver_admin(redis_factory) as (sender, receiver, admin):
        channels = [await receiver.new_channel() for _ in range(2)]
        await sender.push(channels[0], {"warm": True})
        assert await _receive(receiver, channels[0], 1) == [{"warm": True}]
        before = await _calls(admin)
        # Concurrent pushes ride in few batches; each batch's run of pushes to the inbox is
        # one RPUSH and one PEXPIRE.
        await asyncio.gather(*(sender.push(channels[i % 2], {"i": i}) for i in range(60)))
        after = await _calls(admin)
        rpush, pexpire = (after[n] - before.get(n, 0) for n in ("rpush", "pexpire"))
        assert rpush == pexpire and rpush < 30, (rpush, pexpire)
        for first in range(2):
            received = await _receive(receiver, channels[first], 30)
            assert [m["i"] for m in received] == list(range(first, 60, 2))


async def test_a_refused_push_raises_layer_refused(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    server, queue, _ = await _inbox_keys(layer, channel)
    await server.execute(("SET", queue, "not a list"))
    with pytest.raises(LayerRefused, match="WRONGTYPE") as caught:
        await layer.push(channel, {"n": 1})
    assert type(caught.value.__cause__).__module__.startswith("redis")


async def test_a_push_to_a_lost_server_raises_layer_unavailable(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory()
    layer = RedisChannelLayer(hosts=[server.url])
    try:
        channel = await layer.new_channel()
        await layer.push(channel, {"n": 1})
        server.stop()
        with pytest.raises(LayerUnavailable) as caught:
            await asyncio.wait_for(layer.push(channel, {"n": 2}), 20)
        assert caught.value.__cause__ is not None
    finally:
        await layer.close()
