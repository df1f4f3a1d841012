"""``python -m bench.calls``: the CPU one layer call costs this process, alone and batched.

Each operation runs ``--batch`` calls at once (each in a task of its own, gathered, as
requests make them) and one at a time, ``--rounds`` times, against a private Redis server; the
figure is this process's CPU (``time.process_time``) per call, the least of ``--repeats``
passes, since on a shared machine a pass can only be slowed, never sped up. A bare task (a
coroutine that awaits nothing) is measured the same way: the batched calls' own cost is what
they take above it. Operations: ``shard.call`` (one plain command through the server's
batcher), ``push`` (to a process channel), ``send`` (to a normal channel), ``receive`` (of
messages already pushed). It records nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.batch import COMMAND
from distributed_asgi.ops.redis_process import RedisProcess

from . import http as bench_http
from .report import plain_table

__all__ = ["OPERATIONS", "Sizes", "main", "measure"]

OPERATIONS = ("bare task", "shard.call", "push", "send", "receive")
# A message the size of a small response frame.
MESSAGE = {"type": "http.response.body", "body": b"x" * 100, "more_body": False}


BATCH, ROUNDS, REPEATS = 100, 200, 3


@dataclass(slots=True)
class Sizes:
    batch: int = BATCH
    rounds: int = ROUNDS
    repeats: int = REPEATS


async def _measure(url: str, sizes: Sizes) -> dict[str, tuple[float, float]]:
    layer = RedisChannelLayer(hosts=[url], capacity=sizes.batch * sizes.rounds + 1)
    channel = await layer.new_channel("calls")
    place, _ = layer._inbox_route(channel)
    shard = await layer.placement.shard(place)
    route = "calls-route"
    # What a pass leaves in Redis: the route's queue, the process inbox's queue and counters.
    leftovers = (*layer._route(route)[1], *layer._inbox_route(channel)[1])

    async def bare() -> None:
        pass

    def operation(name: str) -> Callable[[], Awaitable[object]]:
        if name == "bare task":
            return bare
        if name == "shard.call":
            return lambda: shard.call(COMMAND, (), ["ECHO", "x"])
        if name == "push":
            return lambda: layer.push(channel, MESSAGE)
        if name == "send":
            return lambda: layer.send(route, MESSAGE)
        return lambda: layer.receive(channel)

    async def one_pass(name: str, batch: int) -> float:
        call = operation(name)
        spent = 0.0
        for _ in range(sizes.rounds):
            if name == "receive":
                await asyncio.gather(*(layer.push(channel, MESSAGE) for _ in range(batch)))
            started = time.process_time()
            if batch == 1:
                await call()
            else:
                await asyncio.gather(*(call() for _ in range(batch)))
            spent += time.process_time() - started
        # What the pass left in Redis goes, so every pass starts alike.
        await shard.command("DEL", *leftovers)
        return spent / (sizes.rounds * batch) * 1e6

    try:
        # Connected, and the inbox's reader running: the first receive starts it (a connection
        # of its own), which would otherwise count as a receive's cost.
        for name in ("push", "receive"):
            await one_pass(name, sizes.batch)
        figures: dict[str, tuple[float, float]] = {}
        for name in OPERATIONS:
            alone = min([await one_pass(name, 1) for _ in range(sizes.repeats)])
            batched = min([await one_pass(name, sizes.batch) for _ in range(sizes.repeats)])
            figures[name] = (alone, batched)
        return figures
    finally:
        await layer.flush()
        await layer.close()


def measure(sizes: Sizes, loop: str) -> dict[str, tuple[float, float]]:
    """µs of this process's CPU per call of each operation: (one at a time, batched)."""
    with RedisProcess() as redis:
        return bench_http.run_in(loop, _measure(redis.url, sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument("--batch", type=int, default=BATCH, help="calls at once")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="batches per pass")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="passes (least kept)")
    args = parser.parse_args(argv)
    loop = bench_http.event_loop()
    figures = measure(Sizes(args.batch, args.rounds, args.repeats), loop)
    print(f"calls: CPU per layer call, event loop {loop}, {args.batch} at once when batched")
    bare = figures["bare task"][1]
    rows = [
        [
            name,
            f"{alone:.1f}",
            f"{batched:.1f}",
            "-" if name == "bare task" else f"{batched - bare:.1f}",
        ]
        for name, (alone, batched) in figures.items()
    ]
    header = ["operation", "alone (µs)", "batched (µs)", "batched above a bare task (µs)"]
    print(plain_table(header, rows, "lrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
