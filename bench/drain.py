"""``python -m bench.drain [--against REV]``: the worker's CPU per request, with no edge.

A worker (the ``worker`` command serving the hello world, uvloop when installed) on a private
Redis is handed a burst of ``--requests`` connects at once, each as an edge sends it (its own
reply channel, a claim asked for, the whole request in the connect). Its CPU (user + system,
from /proc) from just before the burst until it has answered every connect, over the number
of connects, is its cost per request; every answer is counted in the reply inbox, so a worker
that drops connects fails instead of looking cheap.

Nothing but the worker is measured, and it is never idle meanwhile, so the figure moves far
less from run to run than the CPU figures of a whole gateway under wrk: it is the one to watch
while changing the worker's request path. It is the concurrent case (the worker's whole room
out as receives, large pops); ``bench http`` has the rest. With ``--against REV``, REV's worker
runs from a temporary git worktree, in alternating rounds with this tree's, and the medians are
compared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import redis.asyncio as aioredis

from distributed_asgi.core.frames import Connect, encode
from distributed_asgi.core.names import new_connection_id
from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.ops.redis_process import RedisProcess

from . import http as bench_http
from .counters import process_cpu
from .report import checked_out, plain_table

__all__ = ["REQUEST", "SCOPE", "Drain", "connect_frame", "drain", "main"]

ROOT = Path(__file__).resolve().parents[1]
KEY = "drain"
# A bodiless GET as uvicorn scopes it (bench.edge_own serves the same).
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}
# How long the worker may take to start, and to answer a burst, before the run fails.
_START_TIMEOUT = 30.0
_ANSWER_TIMEOUT = 300.0


class Drain:
    """One run's figures: connects sent, answer frames counted (one per connect; a few more
    when an accept went alone), the worker's CPU seconds and the wall time from the burst to
    its last answer."""

    def __init__(self, requests: int, answered: int, cpu: float, seconds: float) -> None:
        self.requests, self.answered, self.cpu, self.seconds = requests, answered, cpu, seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6


@contextlib.contextmanager
def _worker(tree: Path, url: str, prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    args = [sys.executable, "-m", "distributed_asgi", "worker", bench_http.APP, "--key", KEY]
    args += ["--redis", url, "--prefix", prefix, "--loop", bench_http.event_loop()]
    process = subprocess.Popen([*args, "--log-level", "warning"], cwd=tree)
    try:
        yield process
    finally:
        bench_http._stop([process])


async def _run(tree: Path, url: str, requests: int, prefix: str) -> Drain:
    layer = RedisChannelLayer(
        hosts=[url], prefix=prefix, channel_capacity={KEY: requests + 10}, expiry=600
    )
    client = aioredis.from_url(url)
    try:
        peer = await layer.new_channel("edge")
        # Every reply channel is this layer's, so every answer lands in its one inbox list:
        # one frame each (the accept rides with the whole response).
        inbox = layer.keys.queue(peer[: peer.index("!") + 1])

        async def answers() -> int:
            return int(await client.llen(inbox))

        with _worker(tree, url, prefix) as worker:
            # Up once it has answered a first connect (and has warmed up on it).
            await layer.send(KEY, await _connect(layer, peer))
            await _until(answers, 1, _START_TIMEOUT, worker)
            frames = [await _connect(layer, peer) for _ in range(requests)]
            pid = worker.pid
            before, started = process_cpu(pid), time.monotonic()
            for at in range(0, requests, 500):
                await asyncio.gather(*(layer.send(KEY, frame) for frame in frames[at : at + 500]))
            answered = await _until(answers, requests + 1, _ANSWER_TIMEOUT, worker)
            seconds = time.monotonic() - started
            after = process_cpu(pid)
        assert before is not None and after is not None, "this needs /proc"
        return Drain(requests, answered - 1, after - before, seconds)
    finally:
        await client.aclose()
        await layer.close()


async def _connect(layer: RedisChannelLayer, peer: str) -> dict[str, object]:
    return connect_frame(await layer.new_channel("edge"), peer, time.time() + _ANSWER_TIMEOUT)


def connect_frame(reply: str, peer: str, deadline: float) -> dict[str, object]:
    """The connect an edge sends for the hello world's whole GET, replies to ``reply``."""
    frame = Connect(new_connection_id(), dict(SCOPE), reply, deadline, 2.0, [REQUEST], peer, 0)
    frame.claim = True  # as an edge asks for a whole request (core/claims.py)
    return encode(frame)


async def _until(
    count: Callable[[], Awaitable[int]],
    wanted: int,
    timeout: float,
    worker: subprocess.Popen[bytes],
) -> int:
    """Poll ``count()`` until it reaches ``wanted``; RuntimeError if the worker exits first or
    the timeout passes."""
    give_up = time.monotonic() + timeout
    while True:
        found: int = await count()
        if found >= wanted:
            return found
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.returncode}) with {found} answered")
        if time.monotonic() > give_up:
            raise RuntimeError(f"{found - 1} of {wanted - 1} connects answered in {timeout:.0f} s")
        await asyncio.sleep(0.02)


def drain(tree: Path, url: str, requests: int, prefix: str) -> Drain:
    """One run of the worker from ``tree`` against the Redis at ``url``."""
    return bench_http.run_in(bench_http.event_loop(), _run(tree, url, requests, prefix))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="connects per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree (default: 3)")
    parser.add_argument("--against", metavar="REV", help="compare with this git revision")
    parser.add_argument(
        "--compiled", action="store_true", help="build REV compiled too (make compile)"
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        trees = {"this tree": ROOT}
        if args.against:
            rev = checked_out(args.against, compiled=args.compiled)
            trees[args.against] = stack.enter_context(rev)
        redis = stack.enter_context(RedisProcess())
        costs: dict[str, list[float]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                run = drain(tree, redis.url, args.requests, f"drain{round_}{len(costs[name])}")
                costs[name].append(run.cpu_us)
                print(
                    f"  round {round_ + 1}, {name}: {run.cpu_us:.1f} µs per request,"
                    f" {run.answered:,} answer frames for {run.requests:,} connects"
                    f" in {run.seconds:.1f} s",
                    flush=True,
                )
    medians = {name: statistics.median(values) for name, values in costs.items()}
    rows = [[name, f"{value:.1f}"] for name, value in medians.items()]
    if args.against:
        ratio = medians["this tree"] / medians[args.against]
        rows.append(["this tree / " + args.against, f"{ratio:.2f}x"])
    print()
    print(f"worker CPU per request, draining {args.requests:,} connects (medians)")
    print(plain_table(["", "µs per request"], rows, "lr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
