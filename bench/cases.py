"""The four channel-layer measurements: the same code for every layer, only the layer differs.

Rules of this file:

- A case gets a ``LayerKit`` (which makes layer instances of one kind on one server and prefix)
  and ``Sizes``; it returns a flat dict of numbers. It never imports a layer itself.
- Every case warms up (connections, scripts, imports) before its clock starts.
- A case never waits forever: every wait has a deadline, and what did not arrive is counted.
- "Windowed" cases keep ``sizes.window`` operations in flight (gather a window, then the next);
  "sequential" ones await each operation before the next, as a Django consumer awaits
  ``self.channel_layer.send(...)``: that shows what one operation costs, which a window hides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["CASES", "FULL", "QUICK", "CaseFunction", "LayerKit", "Sizes", "serve_peer"]


class LayerKit(Protocol):
    """Makes channel layers of one kind; ``close_all`` closes every one it made.

    ``peer_command`` is the command line of a process that makes its own layer of the same
    kind, on the same server and prefix, and runs ``serve_peer`` (the one-operation cost case
    keeps the other end of each operation out of the measured process).
    """

    def new(self) -> Any: ...

    async def close_all(self) -> None: ...

    def peer_command(self) -> list[str]: ...


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
    sequential_messages: int = 5_000  # sequential throughput: messages, each send awaited
    operations: int = 2_000  # one-operation cost: sends, receives and group_sends measured each


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
    sequential_messages=5_000,
    operations=2_000,
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
    sequential_messages=500,
    operations=200,
)

Result = dict[str, float]
Message = dict[str, Any]
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


async def _transfer(
    producer: Any, consumer: Any, channel: str, count: int, window: int, timeout: float
) -> int:
    """Send ``count`` messages (``window`` in flight) while one task receives them; the number
    received."""
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
    if window == 1:
        for n in range(count):
            await producer.send(channel, {"type": "bench.message", "n": n, "text": "hello"})
    else:
        sends = (
            lambda n=n: producer.send(channel, {"type": "bench.message", "n": n, "text": "hello"})
            for n in range(count)
        )
        await _in_windows(sends, window)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(consumer_task, timeout)
    if not consumer_task.done():
        consumer_task.cancel()
        await asyncio.gather(consumer_task, return_exceptions=True)
    return received


async def _throughput(kit: LayerKit, sizes: Sizes, messages: int, window: int) -> Result:
    consumer, producer = kit.new(), kit.new()
    channel = await consumer.new_channel()
    await _transfer(producer, consumer, channel, sizes.warmup, window, sizes.timeout)
    start = time.perf_counter()
    received = await _transfer(producer, consumer, channel, messages, window, sizes.timeout)
    elapsed = time.perf_counter() - start
    return {
        "messages": messages,
        "received": received,
        "lost": messages - received,
        "seconds": elapsed,
        "rate": received / elapsed,
    }


async def throughput(kit: LayerKit, sizes: Sizes) -> Result:
    """One producer instance, one consumer instance, one ``new_channel()`` channel.

    The producer sends in windows of ``sizes.window`` concurrent ``send()``s (gather one
    window, then the next); the consumer awaits ``receive()`` one message at a time. The clock
    runs from the first send to the last message received.
    """
    return await _throughput(kit, sizes, sizes.messages, sizes.window)


async def sequential(kit: LayerKit, sizes: Sizes) -> Result:
    """As ``throughput``, but the producer awaits each ``send()`` before the next (one in
    flight), ``sizes.sequential_messages`` of them."""
    return await _throughput(kit, sizes, sizes.sequential_messages, 1)


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
    return await _fan_out(kit, sizes, sizes.window)


async def fan_out_sequential(kit: LayerKit, sizes: Sizes) -> Result:
    """As ``fan_out``, but each ``group_send`` is awaited before the next one."""
    return await _fan_out(kit, sizes, 1)


async def _group_sends(sender: Any, groups: list[str], message: Message, window: int) -> None:
    # A fresh dict for every call: a layer may keep or change what it was given.
    if window == 1:
        for group in groups:
            await sender.group_send(group, dict(message))
    else:
        sends = (lambda g=g: sender.group_send(g, dict(message)) for g in groups)
        await _in_windows(sends, window)


async def _fan_out(kit: LayerKit, sizes: Sizes, window: int) -> Result:
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
            await _group_sends(sender, groups, {"type": "bench.fanout", "round": r}, window)
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


# -- one operation's CPU cost ---------------------------------------------------------------------

# The peer's side of the conversation, one line each way (JSON after the word).
_PEER_GROUP = "bench-cost-group"


async def serve_peer(kit: LayerKit, members: int) -> None:
    """The other end of ``operation_cost``, in its own process (``python -m bench.peer``).

    It makes one layer, a ``new_channel()`` for the measured process to send to, and a group of
    ``members`` of its own ``new_channel()``s; prints ``READY {"channel", "group"}``; then
    obeys lines on stdin: ``SEND {"channel", "count"}`` sends that many messages one at a time
    and prints ``SENT``; end of input or ``STOP`` closes the layer. Nothing here receives: what
    the measured process sends waits in Redis (or, for pubsub, in this process's queues).
    """
    layer = kit.new()
    try:
        channel = await layer.new_channel()
        for _ in range(members):
            await layer.group_add(_PEER_GROUP, await layer.new_channel())
        _say("READY", {"channel": channel, "group": _PEER_GROUP})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            word, _, rest = line.strip().partition(" ")
            if word != "SEND":
                return
            order = json.loads(rest)
            for n in range(int(order["count"])):
                await layer.send(order["channel"], {"type": "bench.cost", "n": n})
            _say("SENT", {})
    finally:
        await kit.close_all()


def _say(word: str, data: dict[str, Any]) -> None:
    print(f"{word} {json.dumps(data)}", flush=True)


class _Peer:
    """The measured process's handle on a running ``serve_peer``."""

    def __init__(self, process: asyncio.subprocess.Process, timeout: float) -> None:
        self.process, self.timeout = process, timeout

    async def expect(self, word: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), self.timeout)
            if not line:
                raise RuntimeError(
                    f"the peer exited before {word} (code {self.process.returncode})"
                )
            said, _, rest = line.decode().strip().partition(" ")
            if said == word:
                data: dict[str, Any] = json.loads(rest)
                return data

    def order_sends(self, channel: str, count: int) -> None:
        assert self.process.stdin is not None
        order = json.dumps({"channel": channel, "count": count})
        self.process.stdin.write(f"SEND {order}\n".encode())

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), self.timeout)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def _peer(kit: LayerKit, sizes: Sizes) -> AsyncIterator[tuple[_Peer, dict[str, Any]]]:
    process = await asyncio.create_subprocess_exec(
        *kit.peer_command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    peer = _Peer(process, sizes.timeout)
    try:
        ready = await peer.expect("READY")
        yield peer, ready
    finally:
        await peer.stop()


async def _cpu_per_operation(calls: Callable[[], Awaitable[object]], count: int) -> float:
    """µs of this process's CPU per call, the calls awaited one at a time."""
    start = time.process_time()
    for _ in range(count):
        await calls()
    return (time.process_time() - start) / count * 1e6


async def operation_cost(kit: LayerKit, sizes: Sizes) -> Result:
    """µs of this process's CPU (``time.process_time``: user + system, every thread) per
    ``send``, per ``receive`` and per ``group_send``, each awaited before the next.

    The other end of every operation is a peer process (``serve_peer``), so its work is not
    counted: sends go to the peer's ``new_channel()``; ``group_send``s to a group of
    ``sizes.members`` of the peer's channels; receives take messages the peer sends one at a
    time, the clock running from the order to send to the last message received (so it counts
    whatever this process does to get them, also between two ``receive()`` calls). Each kind
    is warmed up with ``sizes.warmup`` operations first.
    """
    layer = kit.new()
    count, warmup = sizes.operations, sizes.warmup
    async with _peer(kit, sizes) as (peer, ready):
        target, group = ready["channel"], ready["group"]

        def send() -> Awaitable[object]:
            return layer.send(target, {"type": "bench.cost", "text": "hello"})

        def group_send() -> Awaitable[object]:
            return layer.group_send(group, {"type": "bench.cost", "text": "hello"})

        await _cpu_per_operation(send, warmup)
        send_us = await _cpu_per_operation(send, count)
        await _cpu_per_operation(group_send, warmup)
        group_send_us = await _cpu_per_operation(group_send, count)

        own = await layer.new_channel()

        async def receive_from_peer(n: int) -> float:
            async def drain() -> None:
                for _ in range(n):
                    message = await layer.receive(own)
                    if message.get("type") != "bench.cost":
                        raise AssertionError(f"unexpected message {message!r}")

            start = time.process_time()
            peer.order_sends(own, n)
            # One deadline for all n: a wait_for per receive would add a task to each.
            await asyncio.wait_for(drain(), sizes.timeout)
            elapsed = time.process_time() - start
            await peer.expect("SENT")
            return elapsed / n * 1e6

        await receive_from_peer(warmup)
        receive_us = await receive_from_peer(count)
    return {
        "operations": count,
        "send_us": send_us,
        "receive_us": receive_us,
        "group_send_us": group_send_us,
    }


CASES: dict[str, CaseFunction] = {
    "throughput": throughput,
    "sequential": sequential,
    "pingpong": ping_pong,
    "fanout": fan_out,
    "fanout_sequential": fan_out_sequential,
    "burst": burst,
    "opcost": operation_cost,
}
