"""The batcher of one server: its automatic pipelining, and an event loop's end cancelling it
mid-way (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from distributed_asgi.layers.hosts import parse_hosts
from distributed_asgi.layers.shard import Shard


@pytest.fixture
async def shard(redis_url: str) -> AsyncIterator[Shard]:
    shard = Shard(parse_hosts([redis_url])[0])
    yield shard
    await shard.close()


async def test_calls_queued_behind_a_cancelled_batch_still_run(shard: Shard, prefix: str) -> None:
    """asyncio.run cancels every task of an ending loop: a call queued behind the batch being
    cancelled (a reader's CLIENT UNBLOCK while it reads back its pops) must still run."""
    shard.ack(f"{prefix}:n:inbox", "channel")
    shard._acks_due()  # as its timer does: starts a batch in a task of its own
    queued = asyncio.ensure_future(shard.command("ECHO", "after"))
    await asyncio.sleep(0)  # the batch is on the wire, the command waits for the next one
    flusher = shard._flusher
    assert flusher is not None
    flusher.cancel()
    assert await asyncio.wait_for(queued, 2) == b"after"


async def test_acks_of_a_batch_cancelled_before_it_ran_are_written_later(
    shard: Shard, prefix: str, redis_url: str
) -> None:
    counter = f"{prefix}:n:inbox"
    shard.ack(counter, "channel")
    shard._acks_due()  # as its timer does, ACK_DELAY later
    acks = shard._acks_task  # the acks' own batch
    assert acks is not None
    acks.cancel()  # before it ever ran: nothing was written
    await asyncio.sleep(0)
    assert await asyncio.wait_for(shard.command("ECHO", "next"), 2) == b"next"
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await admin.hget(counter, "channel") == b"-1"  # the ack went with the next call
    finally:
        await admin.delete(counter)
        await admin.aclose()


def _count_writes(shard: Shard, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write of the shard's batch connection, as it goes to the socket (counted at the
    connection's stream writer: the shard's own classes may be compiled, and unpatchable)."""
    writes: list[bytes] = []
    pooled = shard._batch_connection._connection
    writer = getattr(pooled, "_writer", None)
    assert isinstance(writer, asyncio.StreamWriter), "connected before counting"
    write = writer.write

    def counted_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        write(data)

    monkeypatch.setattr(writer, "write", counted_write)
    return writes


async def test_calls_made_in_one_loop_turn_go_out_in_one_write(
    shard: Shard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Automatic pipelining: once calls come together, every call of a loop turn is one write."""
    await shard.commands(("ECHO", "warm"), ("ECHO", "up"))  # connected; a batch of one
    await asyncio.gather(*(shard.command("ECHO", str(n)) for n in range(3)))  # calls together
    writes = _count_writes(shard, monkeypatch)
    replies = await asyncio.gather(*(shard.command("ECHO", str(n)) for n in range(20)))
    assert replies == [str(n).encode() for n in range(20)]
    assert len(writes) == 1
    assert writes[0].count(b"ECHO") == 20


async def test_calls_one_at_a_time_are_written_by_their_caller(
    shard: Shard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ALONE_AFTER batches of one call, a call is written at once, in its caller's task:
    no flusher task, no loop turn of waiting."""
    from distributed_asgi.layers.shard import ALONE_AFTER

    await asyncio.gather(*(shard.command("ECHO", str(n)) for n in range(3)))  # together
    for n in range(ALONE_AFTER):
        assert shard._alone < ALONE_AFTER  # still batching: the flusher writes each
        await shard.command("ECHO", str(n))
    writes = _count_writes(shard, monkeypatch)
    call = asyncio.ensure_future(shard.command("ECHO", "alone"))
    await asyncio.sleep(0)  # the caller's task ran once: its call is on the wire already
    assert len(writes) == 1 and shard._flusher is None
    assert await call == b"alone"


async def test_calls_made_before_either_is_awaited_both_get_their_replies(shard: Shard) -> None:
    """While calls come one at a time, each call() gives a coroutine that writes it when
    awaited; two made before either is awaited must not both write at once: the second finds
    the first writing and waits for the next batch, in order."""
    from distributed_asgi.layers.batch import COMMAND
    from distributed_asgi.layers.shard import ALONE_AFTER

    for n in range(ALONE_AFTER):
        await shard.command("ECHO", str(n))
    assert shard._alone >= ALONE_AFTER  # calls now count as coming one at a time
    first = shard.call(COMMAND, (), ["ECHO", "first"])
    second = shard.call(COMMAND, (), ["ECHO", "second"])
    assert list(await asyncio.gather(first, second)) == [b"first", b"second"]
    assert not shard._active and shard._flusher is None  # nothing left running
