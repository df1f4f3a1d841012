"""What ``bench.node_own`` and ``bench.edge_own`` share: a batch measured with the cyclic
collector off, in µs of CPU per request by part, and the table of several batches."""

from __future__ import annotations

import argparse
import gc
import statistics
from collections.abc import Callable, Coroutine
from typing import Any

from . import http as bench_http
from .report import plain_table

__all__ = ["measure", "run_main"]

# One batch: seconds of CPU per request, by part.
Batch = Callable[[int], Coroutine[Any, Any, dict[str, float]]]


def measure(batch: Batch, requests: int) -> dict[str, float]:
    """One batch of ``requests``, the collector off: µs of CPU per request, by part. (The
    ``worker`` and ``edge`` commands run it rarely, ops/collector.py; off, the figures repeat
    within a few percent where a whole process's move by ten.)"""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        seconds = bench_http.run_in(bench_http.event_loop(), batch(requests))
    finally:
        if enabled:
            gc.enable()
    return {part: value * 1e6 for part, value in seconds.items()}


def run_main(prog: str, doc: str | None, whose: str, batch: Batch, argv: list[str] | None) -> int:
    """The command line of either: ``--requests`` a batch, ``--rounds`` batches, one table."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=5, help="batches (default: 5)")
    args = parser.parse_args(argv)
    runs = [measure(batch, args.requests) for _ in range(args.rounds)]
    rows = []
    for part in runs[0]:
        each = " / ".join(f"{run[part]:.2f}" for run in runs)
        rows.append([part, f"{statistics.median(run[part] for run in runs):.2f}", each])
    print(f"{whose} own code, {args.requests:,} requests a batch, {args.rounds} batches")
    print(plain_table(["", "µs per request (median)", "each batch"], rows, "lrl"))
    return 0
