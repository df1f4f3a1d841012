"""The batcher of one server, when an event loop's end cancels it mid-way (real Redis)."""

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
