"""Behaviour only the Redis layer has: round trips, blocking pops, bad stored data, outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from distributed_asgi.layers import ChannelFull, RedisChannelLayer
from distributed_asgi.layers.keys import entry
from distributed_asgi.layers.scripts import OVERFLOW
from distributed_asgi.ops.redis_process import RedisProcess


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def layer(redis_url: str, prefix: str) -> AsyncIterator[RedisChannelLayer]:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    yield layer
    await layer.flush()
    await layer.close()


async def command_calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_send_to_a_normal_channel_within_capacity_runs_no_script(
    layer: RedisChannelLayer, admin: aioredis.Redis
) -> None:
    await layer.send("test.warmup", {"x": 0})
    before = {name: await command_calls(admin, name) for name in ("evalsha", "rpush", "pexpire")}
    for i in range(10):
        await layer.send("test.one", {"i": i})
    after = {name: await command_calls(admin, name) for name in before}
    assert {name: after[name] - before[name] for name in before} == {
        "evalsha": 0,
        "rpush": 10,
        "pexpire": 10,
    }


async def test_a_send_to_a_process_channel_is_one_script_call(
    layer: RedisChannelLayer, admin: aioredis.Redis
) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"x": 0})
    before = await command_calls(admin, "evalsha")
    for i in range(10):
        await layer.send(channel, {"i": i})
    assert await command_calls(admin, "evalsha") - before == 10


async def test_sends_at_once_over_a_normal_channels_capacity_keep_exactly_it(
    redis_url: str, prefix: str, admin: aioredis.Redis
) -> None:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, capacity=3)
    try:
        # One merged RPUSH: each send judges the length just after its own entry.
        results = await asyncio.gather(
            *(layer.send("test.full", {"i": i}) for i in range(10)), return_exceptions=True
        )
        assert [r is None for r in results] == [True] * 3 + [False] * 7
        assert all(isinstance(r, ChannelFull) for r in results[3:])
        assert await admin.llen(f"{prefix}:q:test.full") == 3
        assert [(await layer.receive("test.full"))["i"] for _ in range(3)] == [0, 1, 2]
        await layer.send("test.full", {"i": 10})  # room again
        assert (await layer.receive("test.full"))["i"] == 10
    finally:
        await layer.flush()
        await layer.close()


async def test_a_full_normal_channel_trims_its_expired_entries_for_a_send(
    redis_url: str, prefix: str
) -> None:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, capacity=2, expiry=1)
    try:
        await layer.send("test.old", {"i": 0})
        await layer.send("test.old", {"i": 1})
        with pytest.raises(ChannelFull):
            await layer.send("test.old", {"i": 2})
        await asyncio.sleep(1.1)
        await layer.send("test.old", {"i": 3})
        assert (await layer.receive("test.old"))["i"] == 3
    finally:
        await layer.flush()
        await layer.close()


async def test_overflow_takes_back_only_an_entry_still_over_capacity(
    admin: aioredis.Redis, prefix: str
) -> None:
    """The second step of a send over capacity, run on entries written by hand."""
    queue, expiry = f"{prefix}:q:test.over", 60_000

    async def overflow(pushed: bytes, capacity: int) -> int:
        return int(await admin.eval(OVERFLOW.source, 1, queue, pushed, capacity, expiry))

    now = int(time.time() * 1000)
    a, b, c = (entry(now, "test.over", payload) for payload in (b"a", b"b", b"c"))
    await admin.rpush(queue, a, b, c)
    assert await overflow(c, 2) == 0  # still over: taken back
    assert await admin.lrange(queue, 0, -1) == [a, b]
    await admin.rpush(queue, c)
    await admin.lpop(queue)  # a receiver took one meanwhile: c fits where it lies
    assert await overflow(c, 2) == 1
    assert await admin.lrange(queue, 0, -1) == [b, c]
    await admin.delete(queue)
    await admin.rpush(queue, a, b)
    assert await overflow(c, 1) == 1  # not there any more (received): it was sent
    assert await admin.lrange(queue, 0, -1) == [a, b]


async def test_group_send_is_one_call_whatever_the_group_size(
    layer: RedisChannelLayer, admin: aioredis.Redis
) -> None:
    await layer.group_send("warmup", {"x": 0})  # loads the script on the server
    for _ in range(50):
        await layer.group_add("big", await layer.new_channel())
    before = await command_calls(admin, "evalsha")
    await layer.group_send("big", {"x": 1})
    assert await command_calls(admin, "evalsha") - before == 1


async def test_process_channels_share_one_blocking_pop(
    layer: RedisChannelLayer, admin: aioredis.Redis
) -> None:
    channels = [await layer.new_channel() for _ in range(50)]
    waiters = [asyncio.ensure_future(layer.receive(c)) for c in channels]
    await asyncio.sleep(0.3)
    clients = await admin.client_list()
    blocked = [c for c in clients if c.get("cmd") == "blmove"]
    assert len(blocked) == 1
    for channel in reversed(channels):
        await layer.send(channel, {"to": channel})
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert [r["to"] for r in results] == channels


async def test_flush_does_not_use_keys(layer: RedisChannelLayer, admin: aioredis.Redis) -> None:
    for i in range(30):
        await layer.send(f"test.flush{i}", {"i": i})
    before = await command_calls(admin, "keys")
    await layer.flush()
    assert await command_calls(admin, "keys") == before
    assert not [k async for k in admin.scan_iter(match=f"{layer.prefix}:*")]


async def test_garbage_in_a_queue_is_logged_and_dropped(
    layer: RedisChannelLayer, admin: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    channel = await layer.new_channel()
    inbox = f"{layer.prefix}:q:{channel[: channel.index('!') + 1]}"
    key = f"{layer.prefix}:q:test.garbage"
    now = b"%013d" % 0
    await layer.send("test.garbage", {"first": True})
    await admin.rpush(key, b"no header at all", b"9" * 13 + b"test.garbage\n\xc1\xff", now)
    await admin.rpush(key, b"9" * 13 + b"test.garbage\nM\x92\x01")  # valid msgpack, not a dict
    await layer.send("test.garbage", {"last": True})
    await admin.rpush(inbox, b"9" * 13 + channel.encode() + b"\nF-not-fernet")
    await layer.send(channel, {"still": "works"})
    with caplog.at_level(logging.WARNING, logger="distributed_asgi.layers"):
        assert await asyncio.wait_for(layer.receive("test.garbage"), 5) == {"first": True}
        assert await asyncio.wait_for(layer.receive("test.garbage"), 5) == {"last": True}
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"still": "works"}
    assert "dropped" in caplog.text


async def test_idle_receive_survives_socket_timeout(redis_url: str, prefix: str) -> None:
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 1}], prefix=prefix)
    try:
        channel = await layer.new_channel()
        waiter = asyncio.ensure_future(layer.receive(channel))
        normal = asyncio.ensure_future(layer.receive("test.idle"))
        await asyncio.sleep(2.5)
        assert not waiter.done() and not normal.done()
        await layer.send(channel, {"late": True})
        await layer.send("test.idle", {"late": True})
        assert await asyncio.wait_for(waiter, 5) == {"late": True}
        assert await asyncio.wait_for(normal, 5) == {"late": True}
    finally:
        await layer.flush()
        await layer.close()


async def test_same_layer_recovers_after_redis_restart(
    redis_factory: Callable[..., RedisProcess], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    layer = RedisChannelLayer(hosts=[server.url])
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"before": True})
        assert await layer.receive(channel) == {"before": True}
        waiter = asyncio.ensure_future(layer.receive(channel))
        with caplog.at_level(logging.WARNING, logger="distributed_asgi.layers"):
            server.stop()
            with pytest.raises(Exception) as failure:
                await asyncio.wait_for(layer.send(channel, {"during": True}), 5)
            assert (
                "Connection" in type(failure.value).__name__
                or "connect" in str(failure.value).lower()
            )
            await asyncio.sleep(0.5)
            server.start()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                try:
                    await layer.send(channel, {"after": True})
                    break
                except Exception:
                    assert loop.time() < deadline, "layer did not recover within 10 s"
                    await asyncio.sleep(0.2)
            assert await asyncio.wait_for(waiter, 10) == {"after": True}
        assert "unreachable" in caplog.text
        assert "reachable again" in caplog.text
        await layer.send("test.after", {"x": 1})
        assert await asyncio.wait_for(layer.receive("test.after"), 5) == {"x": 1}
    finally:
        await layer.close()


async def test_password_and_unix_socket_hosts(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory(args=["--requirepass", "s3cret"], unix_socket=True)
    for hosts in (
        [f"redis://:s3cret@127.0.0.1:{server.port}/0"],
        [("127.0.0.1", server.port)],  # no password: must fail
        [{"host": "127.0.0.1", "port": server.port, "password": "s3cret"}],
        [f"unix://{server.unix_socket_path}?db=0&password=s3cret"],
    ):
        layer = RedisChannelLayer(hosts=hosts)
        try:
            if isinstance(hosts[0], tuple):
                with pytest.raises(Exception, match=r"(?i)auth"):
                    await layer.send("test.auth", {"x": 1})
                continue
            await layer.send("test.auth", {"x": 1})
            assert await asyncio.wait_for(layer.receive("test.auth"), 5) == {"x": 1}
        finally:
            await layer.close()


def test_password_is_masked_in_repr() -> None:
    layer = RedisChannelLayer(hosts=["redis://user:hunter2@example.com:6379/0"])
    assert "hunter2" not in repr(layer)
    assert "***" in repr(layer)


def test_seed_style_host_arguments() -> None:
    layer = RedisChannelLayer(host="redis.example", port="6380", db=4, password="pw")
    (spec,) = layer.hosts
    assert spec.kwargs == {"host": "redis.example", "port": 6380, "db": 4, "password": "pw"}


async def test_works_from_several_event_loops(redis_url: str, prefix: str) -> None:
    """async_to_sync runs each call in a new loop: the layer keeps per-loop connections."""
    from asgiref.sync import async_to_sync

    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        await layer.send("test.loops", {"from": "main"})
        await asyncio.to_thread(async_to_sync(layer.send), "test.loops", {"from": "thread"})
        assert await layer.receive("test.loops") == {"from": "main"}
        assert await layer.receive("test.loops") == {"from": "thread"}
    finally:
        await layer.flush()
        await layer.close()


async def test_closing_while_a_pop_is_out_loses_nothing(redis_url: str, prefix: str) -> None:
    """A Node stopping (its receives cancelled, its layer closed) while connections keep
    arriving: whatever its last pop takes goes back on the queue for the others."""
    other = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        for attempt in range(20):
            leaving = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
            receiving = asyncio.ensure_future(leaving.receive("work"))
            await asyncio.sleep(0.01)  # the blocking pop is out
            receiving.cancel()
            closing = asyncio.ensure_future(leaving.close())
            await other.send("work", {"n": attempt})
            await closing
            assert receiving.cancelled()
            got = await asyncio.wait_for(other.receive("work"), 5)
            assert got == {"n": attempt}
    finally:
        await other.close()


async def test_close_deletes_the_process_inbox_keys(
    redis_url: str, prefix: str, admin: aioredis.Redis
) -> None:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "a"})
    await layer.send(channel, {"type": "b"})
    assert await layer.receive(channel) == {"type": "a"}  # "b" stays queued or buffered
    assert await admin.keys(f"{prefix}:*")
    await layer.close()
    assert await admin.keys(f"{prefix}:*") == []


async def test_a_channel_per_request_leaves_no_pile_of_counters(
    layer: RedisChannelLayer, admin: aioredis.Redis, prefix: str
) -> None:
    """The edge makes a reply channel per request: their zeroed counters are forgotten in
    batches, not kept (in Redis and in the process) for a whole expiry period."""
    for _ in range(2500):
        channel = await layer.new_channel("edge")
        await layer.send(channel, {"type": "reply"})
        await layer.receive(channel)
    counters = [key async for key in admin.scan_iter(match=f"{prefix}:n:*")]
    assert len(counters) == 1
    await asyncio.sleep(0.2)  # the last batch's FORGET_IDLE call is posted without waiting
    assert await admin.hlen(counters[0]) <= 1000


@pytest.mark.parametrize("host", ["redis://127.0.0.1:1", "redis+cluster://127.0.0.1:1"])
async def test_a_foreign_process_channel_is_refused_before_any_redis_call(host: str) -> None:
    """No connection is tried (the server here does not even exist): the refusal is at once."""
    layer = RedisChannelLayer(hosts=[host])
    try:
        with pytest.raises(AssertionError, match=r"^Wrong client prefix: 'specific\.xyz!abc'"):
            await asyncio.wait_for(layer.receive("specific.xyz!abc"), 1)
    finally:
        await layer.close()


async def test_the_inbox_reader_counts_its_waiters_through_cancels(
    layer: RedisChannelLayer,
) -> None:
    """Waiters given a message and waiters cancelled both leave the reader's count: one still
    waiting after the others are gone keeps the reader serving past its linger time."""
    channels = [await layer.new_channel() for _ in range(60)]
    waiters = [asyncio.ensure_future(layer.receive(c)) for c in channels]
    await asyncio.sleep(0.2)
    for waiter in waiters[:20]:
        waiter.cancel()
    for channel in channels[20:40]:
        await layer.send(channel, {"n": 1})
    assert await asyncio.wait_for(asyncio.gather(*waiters[20:40]), 5) == [{"n": 1}] * 20
    await asyncio.sleep(2.5)  # past LINGER: a reader that lost count would have stopped
    for channel in channels[40:]:
        await layer.send(channel, {"n": 2})
    assert await asyncio.wait_for(asyncio.gather(*waiters[40:]), 5) == [{"n": 2}] * 20
    reader = next(iter(layer.placement.readers().values()))
    assert reader._waiting() == 0
