"""Sync callers: every ``async_to_sync`` call runs in a new event loop, and the layer keeps every
message across them (DESIGN.md, "Nothing popped is lost").

Django calls the layer from sync code (views, management commands, tests), so one layer object
meets a new event loop on every call, or several loops at once from several threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from asgiref.sync import async_to_sync

from distributed_asgi.layers import ChannelFull, RedisChannelLayer
from distributed_asgi.ops.redis_process import RedisProcess
from tests.layers.conftest import LayerFactory

T = TypeVar("T")

# Every kind that has a process inbox in Redis (the memory layer has no loop-bound state).
REDIS_KINDS = ["redis", "cluster", "local"]


def in_new_loop(function: Callable[[], Awaitable[T]]) -> T:
    """Run ``function()`` as sync code does: in an event loop of its own, ended afterwards."""

    async def call() -> T:
        return await function()

    return async_to_sync(call)()


def within(seconds: float, awaitable: Awaitable[T]) -> Awaitable[T]:
    return asyncio.wait_for(awaitable, seconds)


async def test_process_channels_received_in_separate_sync_calls_all_arrive(
    make_layer: LayerFactory,
) -> None:
    """The first receive pops the whole process inbox; the other channel's message must still
    reach the next call, which runs in another loop."""
    layer = make_layer()

    def sync_code() -> list[Any]:
        first = async_to_sync(layer.new_channel)()
        second = async_to_sync(layer.new_channel)()
        async_to_sync(layer.send)(first, {"to": "first"})
        async_to_sync(layer.send)(second, {"to": "second"})
        return [
            in_new_loop(lambda: within(5, layer.receive(first))),
            in_new_loop(lambda: within(5, layer.receive(second))),
        ]

    assert await asyncio.to_thread(sync_code) == [{"to": "first"}, {"to": "second"}]


@pytest.mark.parametrize("kind", ["normal", "process"])
async def test_sync_send_then_receive_never_fills_the_channel(
    make_layer: LayerFactory, kind: str
) -> None:
    """Each receive frees its message's capacity, also when its loop ends right after."""
    layer = make_layer(capacity=3)

    def sync_code() -> None:
        channel = "test.sync-capacity" if kind == "normal" else async_to_sync(layer.new_channel)()
        for i in range(10):
            async_to_sync(layer.send)(channel, {"i": i})
            assert in_new_loop(lambda: within(5, layer.receive(channel))) == {"i": i}

    await asyncio.to_thread(sync_code)  # raises ChannelFull if capacity leaked


@pytest.mark.parametrize("make_layer", REDIS_KINDS, indirect=True)
async def test_messages_popped_as_a_sync_call_ends_reach_the_next_call(
    make_layer: LayerFactory,
) -> None:
    """Each call receives one message and sends the next one to another channel of the same
    process, then its loop ends: the reader's rounds still on the wire pop that message (or
    just did), and the next call, in a new loop, must get it."""
    layer = make_layer()

    def sync_code() -> list[int]:
        channels = [async_to_sync(layer.new_channel)() for _ in range(21)]
        async_to_sync(layer.send)(channels[0], {"i": 0})
        received = []
        for i in range(20):

            async def step(i: int = i) -> None:
                message = await within(5, layer.receive(channels[i]))
                received.append(message["i"])
                await layer.send(channels[i + 1], {"i": i + 1})

            in_new_loop(step)
        received.append(in_new_loop(lambda: within(5, layer.receive(channels[20])))["i"])
        return received

    assert await asyncio.to_thread(sync_code) == list(range(21))


@pytest.mark.parametrize("make_layer", REDIS_KINDS, indirect=True)
@pytest.mark.parametrize("kind", ["normal", "process"])
async def test_a_receive_cancelled_as_its_loop_ends_loses_nothing(
    make_layer: LayerFactory, kind: str
) -> None:
    """A sync caller gives up waiting (its receive is cancelled, its loop ends) at the moment a
    message arrives: the message is either returned or still there for the next receive."""
    receiver, sender = make_layer(), make_layer()
    channel = "test.sync-cancel" if kind == "normal" else await receiver.new_channel()
    rounds = 30
    got: list[int] = []

    def sync_receiver(give_up_after: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            got.append(in_new_loop(lambda: within(give_up_after, receiver.receive(channel)))["i"])

    rng = random.Random(7)
    for i in range(rounds):
        give_up_after = 0.05 + rng.random() * 0.02
        receiving = asyncio.ensure_future(asyncio.to_thread(sync_receiver, give_up_after))
        await asyncio.sleep(0.05 + rng.random() * 0.02)  # around the moment it gives up
        await sender.send(channel, {"i": i})
        await receiving
    while len(got) < rounds:  # what no sync call returned must still be there
        got.append((await within(5, receiver.receive(channel)))["i"])
    assert sorted(got) == list(range(rounds))


@pytest.mark.parametrize("make_layer", REDIS_KINDS, indirect=True)
async def _two_threads_receiving(layer: Any) -> list[list[int]]:
    """Two threads, each with its own loop, receive on their own channels of one layer at the
    same time; what each received, in the order received."""
    channels = [await layer.new_channel(), await layer.new_channel()]
    count = 40

    def sync_receiver(channel: str) -> list[int]:
        return [in_new_loop(lambda: within(10, layer.receive(channel)))["n"] for _ in range(count)]

    receivers = [asyncio.ensure_future(asyncio.to_thread(sync_receiver, c)) for c in channels]
    for n in range(count):
        for channel in channels:
            await layer.send(channel, {"n": n})
        await asyncio.sleep(0.005)
    received: list[list[int]] = await within(60, asyncio.gather(*receivers))
    return received


async def test_two_threads_receiving_from_one_layer_each_get_their_messages(
    make_layer: LayerFactory,
) -> None:
    """Whichever loop pops a message, its receiver gets it: nothing lost, nothing twice."""
    received = await _two_threads_receiving(make_layer())
    assert [sorted(messages) for messages in received] == [list(range(40))] * 2


async def test_two_threads_receiving_from_one_layer_get_their_messages_in_order(
    make_layer: LayerFactory,
) -> None:
    received = await _two_threads_receiving(make_layer())
    assert received == [list(range(40))] * 2


async def test_ended_loops_leave_no_connection_open(
    redis_factory: Callable[..., RedisProcess], prefix: str
) -> None:
    """A loop that ends takes its connections with it: sync callers do not pile them up."""
    server = redis_factory()
    admin = aioredis.Redis.from_url(server.url)
    layer = RedisChannelLayer(hosts=[server.url], prefix=prefix)

    def sync_code() -> None:
        channel = async_to_sync(layer.new_channel)()
        for i in range(15):
            async_to_sync(layer.send)(channel, {"i": i})
            async_to_sync(layer.send)("test.normal", {"i": i})
            assert in_new_loop(lambda: within(5, layer.receive(channel))) == {"i": i}
            assert in_new_loop(lambda: within(5, layer.receive("test.normal"))) == {"i": i}

    try:
        await asyncio.to_thread(sync_code)
        clients = await admin.client_list()
        assert len(clients) <= 2, clients  # this admin connection (and at most one straggler)
    finally:
        await layer.close()
        await admin.aclose()


async def test_acks_of_an_ended_loop_are_written(redis_url: str, prefix: str) -> None:
    """Another process sees the capacity a sync receive freed, without this process making any
    further call: the ack is written before the receiving loop is gone."""
    receiver = RedisChannelLayer(hosts=[redis_url], prefix=prefix, capacity=1)
    sender = RedisChannelLayer(hosts=[redis_url], prefix=prefix, capacity=1)
    try:
        channel = await receiver.new_channel()

        def sync_code() -> None:
            for i in range(5):
                async_to_sync(sender.send)(channel, {"i": i})
                assert in_new_loop(lambda: within(5, receiver.receive(channel))) == {"i": i}

        await asyncio.to_thread(sync_code)
        await sender.send(channel, {"i": 5})  # from this loop, after the receiver's loops ended
        with pytest.raises(ChannelFull):
            await sender.send(channel, {"i": 6})
    finally:
        await sender.close()
        await receiver.flush()
        await receiver.close()


def test_a_loop_closed_without_cancelling_its_tasks_is_let_go(
    redis_factory: Callable[..., RedisProcess], prefix: str
) -> None:
    """loop.close() with the layer's tasks still pending (no teardown): the next loop the layer
    meets shuts the closed loop's reader connection, whose rounds would otherwise go on popping
    this process's messages into a socket nobody reads, and keeps nothing of that loop."""
    server = redis_factory()
    layer = RedisChannelLayer(hosts=[server.url], prefix=prefix)
    loop = asyncio.new_event_loop()
    channel = loop.run_until_complete(layer.new_channel())
    loop.run_until_complete(layer.send(channel, {"n": 1}))
    assert loop.run_until_complete(layer.receive(channel)) == {"n": 1}
    loop.close()
    closed = weakref.ref(loop)
    del loop

    async def next_loop() -> Any:
        admin = aioredis.Redis.from_url(server.url)
        try:
            await layer.send("test.other", {})  # the layer meets a new loop
            gc.collect()  # the closed loop's coroutines destroyed while another loop runs
            deadline = asyncio.get_running_loop().time() + 5
            while any(c.get("cmd") == "blmove" for c in await admin.client_list()):
                assert asyncio.get_running_loop().time() < deadline, "the closed loop still pops"
                await asyncio.sleep(0.02)
            await layer.send(channel, {"n": 2})
            return await within(5, layer.receive(channel))
        finally:
            await layer.close()
            await admin.aclose()

    assert asyncio.run(next_loop()) == {"n": 2}
    gc.collect()
    assert closed() is None, "the closed loop is still referenced"
