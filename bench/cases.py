"""The four channel-layer measurements: the same code for every layer, only the layer differs.

Rules of this file:

- A case gets a ``LayerKit`` (which makes layer instances of one kind on one server and prefix)
  and ``Sizes``; it returns a flat dict of numbers. It never imports a layer itself.
- Every case warms up (connections, scripts, imports) before its clock starts.
- A case never waits forever: every wait has a deadline, and what did not arrive is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["CASES", "FULL", "QUICK", "CaseFunction", "LayerKit", "Sizes"]


class LayerKit(Protocol):
    """Makes channel layers of one kind; ``close_all`` closes every one it made."""

    def new(self) -> Any: ...

    async def close_all(self) -> None: ...


@dataclass(frozen=True)
class Sizes:
    messages: int  # throughput: messages sent, after the warm-up
    window: int  # sends (and group_sends) in flight at once
    warmup: int  # throughput messages / ping-pong round trips before the clock starts
    round_trips: int  # ping-pong: timed round trips
    groups: int  # fan-out: groups ...
    members: int  # ... of this many member channels each ...
    receivers: int  # ... spread over this many receiving layer instances
    fanout_rounds: int  # fan-out: timed rounds (one group_send per group each), after one warm-up
    runs: int  # each (case, layer) is measured this many times, in rotation; the median counts
    timeout: float  # seconds any one wait may take before what is missing counts as lost


FULL = Sizes(
    messages=20_000,
    window=100,
    warmup=200,
    round_trips=2_000,
    groups=100,
    members=10,
    receivers=10,
    fanout_rounds=10,
    runs=3,
    timeout=60.0,
)
QUICK = Sizes(
    messages=1_000,
    window=100,
    warmup=50,
    round_trips=200,
    groups=100,
    members=10,
    receivers=10,
    fanout_rounds=2,
    runs=1,
    timeout=20.0,
)

Result = dict[str, float]
CaseFunction = Callable[[LayerKit, Sizes], Awaitable[Result]]


async def _in_windows(calls: Iterable[Callable[[], Awaitable[object]]], window: int) -> None:
    """Run the calls with at most ``window`` in flight: gather a window, then the next one."""
    batch: list[Awaitable[object]] = []
    for call in calls:
        batch.append(call())
        if len(batch) >= window:
            await asyncio.gather(*batch)
            batch = []
    if batch:
        await asyncio.gather(*batch)


# -- throughput ----------------------------------------------------------------------------------


async def _transfer(producer: Any, consumer: Any, channel: str, count: int, sizes: Sizes) -> int:
    """Send ``count`` messages while one task receives them; the number received."""
    received = 0

    async def consume() -> None:
        nonlocal received
        for _ in range(count):
            message = await consumer.receive(channel)
            if message.get("type") != "bench.message":
                raise AssertionError(f"unexpected message {message!r}")
            received += 1

    consumer_task = asyncio.create_task(consume())
    await asyncio.sleep(0)  # the consumer is waiting in receive() before the first send
    sends = (
        lambda n=n: producer.send(channel, {"type": "bench.message", "n": n, "text": "hello"})
        for n in range(count)
    )
    await _in_windows(sends, sizes.window)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(consumer_task, sizes.timeout)
    return received


async def throughput(kit: LayerKit, sizes: Sizes) -> Result:
    """One producer instance, one consumer instance, one ``new_channel()`` channel.

    The producer sends in windows of ``sizes.window`` concurrent ``send()``s (gather one
    window, then the next); the consumer awaits ``receive()`` one message at a time. The clock
    runs from the first send to the last message received.
    """
    consumer, producer = kit.new(), kit.new()
    channel = await consumer.new_channel()
    await _transfer(producer, consumer, channel, sizes.warmup, sizes)
    start = time.perf_counter()
    received = await _transfer(producer, consumer, channel, sizes.messages, sizes)
    elapsed = time.perf_counter() - start
    return {
        "messages": sizes.messages,
        "received": received,
        "lost": sizes.messages - received,
        "seconds": elapsed,
        "rate": received / elapsed,
    }


# -- ping-pong -----------------------------------------------------------------------------------


async def ping_pong(kit: LayerKit, sizes: Sizes) -> Result:
    """A sends to B's channel, B echoes to A's channel; the time of each full round trip."""
    a, b = kit.new(), kit.new()
    a_channel, b_channel = await a.new_channel(), await b.new_channel()

    async def echo() -> None:
        while True:
            message = await b.receive(b_channel)
            await b.send(a_channel, message)
            if message["type"] == "bench.stop":
                return

    async def pings() -> list[float]:
        samples: list[float] = []
        for n in range(sizes.warmup + sizes.round_trips):
            start = time.perf_counter_ns()
            await a.send(b_channel, {"type": "bench.ping", "n": n})
            reply = await a.receive(a_channel)
            elapsed = time.perf_counter_ns() - start
            if reply["n"] != n:
                raise AssertionError(f"round trip {n} got reply {reply!r}")
            if n >= sizes.warmup:
                samples.append(elapsed / 1000)
        await a.send(b_channel, {"type": "bench.stop"})
        await a.receive(a_channel)
        return samples

    # One deadline for the whole exchange: a wait_for per round trip would add a task (and
    # its scheduling) to every sample.
    echo_task = asyncio.create_task(echo())
    samples = await asyncio.wait_for(pings(), sizes.timeout)
    await asyncio.wait_for(echo_task, sizes.timeout)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "round_trips": len(samples),
        "p50_us": cuts[49],
        "p99_us": cuts[98],
        "mean_us": statistics.fmean(samples),
    }


# -- group fan-out -------------------------------------------------------------------------------


async def _join_groups(kit: LayerKit, sizes: Sizes) -> tuple[list[str], list[tuple[Any, str]]]:
    """Groups and their (receiving layer, member channel) pairs, every member joined.

    Member ``m`` of group ``g`` is a ``new_channel()`` of receiver ``(g * members + m) %
    receivers`` and is added by that receiver (the pubsub layer only accepts its own channels).
    """
    receivers = [kit.new() for _ in range(sizes.receivers)]
    groups = [f"bench-group-{g}" for g in range(sizes.groups)]
    members: list[tuple[Any, str]] = []
    joins: list[tuple[Any, str, str]] = []
    for g, group in enumerate(groups):
        for m in range(sizes.members):
            layer = receivers[(g * sizes.members + m) % sizes.receivers]
            channel = await layer.new_channel()
            members.append((layer, channel))
            joins.append((layer, group, channel))
    await _in_windows(
        (lambda j=j: j[0].group_add(j[1], j[2]) for j in joins),
        sizes.window,
    )
    return groups, members


async def fan_out(kit: LayerKit, sizes: Sizes) -> Result:
    """Receivers already waiting in ``receive()``; one sender ``group_send``s to every group
    (all groups in flight at once, in windows of ``sizes.window``); the clock stops when every
    member has its message. One warm-up round, then ``sizes.fanout_rounds`` timed rounds."""
    groups, members = await _join_groups(kit, sizes)
    sender = kit.new()
    expected = len(members)
    rounds = 1 + sizes.fanout_rounds
    arrived = [0] * rounds
    complete = [asyncio.Event() for _ in range(rounds)]

    async def member(layer: Any, channel: str) -> None:
        for _ in range(rounds):
            message = await layer.receive(channel)
            r = message["round"]
            arrived[r] += 1
            if arrived[r] == expected:
                complete[r].set()

    tasks = [asyncio.create_task(member(layer, channel)) for layer, channel in members]
    await asyncio.sleep(0.2)  # every member is now waiting in receive()
    seconds = 0.0
    lost = 0
    try:
        for r in range(rounds):
            start = time.perf_counter()
            await _in_windows(
                (
                    lambda g=g, r=r: sender.group_send(g, {"type": "bench.fanout", "round": r})
                    for g in groups
                ),
                sizes.window,
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(complete[r].wait(), sizes.timeout)
            elapsed = time.perf_counter() - start
            if r > 0:
                seconds += elapsed
                lost += expected - arrived[r]
            await asyncio.sleep(0.05)  # let every member get back into receive()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    delivered = sum(arrived[1:])
    return {
        "deliveries": delivered,
        "lost": lost,
        "seconds": seconds,
        "rate": delivered / seconds,
    }


async def burst(kit: LayerKit, sizes: Sizes) -> Result:
    """Members join, then one ``group_send`` per group before anyone receives; then every
    member drains (all at once, each waiting up to ``sizes.timeout / 4``). Counts what arrived."""
    groups, members = await _join_groups(kit, sizes)
    sender = kit.new()
    await _in_windows(
        (lambda g=g: sender.group_send(g, {"type": "bench.burst", "group": g}) for g in groups),
        sizes.window,
    )
    start = time.perf_counter()

    async def drain(layer: Any, channel: str) -> int:
        try:
            await asyncio.wait_for(layer.receive(channel), sizes.timeout / 4)
        except asyncio.TimeoutError:
            return 0
        return 1

    delivered = sum(await asyncio.gather(*(drain(layer, channel) for layer, channel in members)))
    return {
        "expected": len(members),
        "delivered": delivered,
        "lost": len(members) - delivered,
        "seconds": time.perf_counter() - start,
    }


CASES: dict[str, CaseFunction] = {
    "throughput": throughput,
    "pingpong": ping_pong,
    "fanout": fan_out,
    "burst": burst,
}
