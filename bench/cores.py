"""``python -m bench cores``: the gateway with 2 edge processes and 2 worker processes beside
1 and 1, on this machine, as ratios from one run.

Both gateways are the command line as users run it (``edge --workers N``, ``worker
--processes N``) on a private Redis, serving the hello world of ``bench http`` to wrk at 32
keep-alive connections (or the Python load generator), the two setups measured in rotation.
CPU is summed over every process of a role (the edge's processes are uvicorn's children, the
workers the pool's), from ``/proc``.

On a 2-core machine this cannot show scaling: one edge and one worker already keep both cores
busy (with Redis and the load generator beside them), so more processes only share the same two
cores. The ratio says what the processes cost each other there, not what a bigger machine gains.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from . import http as bench_http
from .counters import child_pids, process_cpu
from .report import load_average, machine_facts, markdown_table, plain_table, replace_section

SECTION = "cores"
SETUPS = {"1 edge + 1 worker": 1, "2 edges + 2 workers": 2}


def _role_pids(setup: bench_http.Setup, processes: int) -> dict[str, list[int]]:
    pids = {"redis": [setup.pids["redis"]]} if "redis" in setup.pids else {}
    for role in ("edge", "worker"):
        parent = setup.pids[role]
        pids[role] = sorted(child_pids(parent)) if processes > 1 else [parent]
    return pids


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(process_cpu(pid) or 0.0 for pid in each) for role, each in pids.items()}


@dataclass
class CoresRun:
    setup: str
    load: bench_http.Load
    cpu_us: dict[str, float]  # role -> µs of CPU per request, summed over its processes


@contextlib.contextmanager
def _gateway(processes: int) -> Iterator[bench_http.Setup]:
    extra = (
        ([f"--workers={processes}"], [f"--processes={processes}"]) if processes > 1 else ((), ())
    )
    with bench_http.gateway_server(edge_extra=extra[0], worker_extra=extra[1]) as setup:
        yield setup


def measure(name: str, processes: int, sizes: bench_http.HttpSizes, loop: str) -> CoresRun:
    with _gateway(processes) as setup:
        bench_http.measure(setup.port, sizes, loop, duration=sizes.warmup)
        pids = _role_pids(setup, processes)
        before = _cpu(pids)
        load = bench_http.measure(setup.port, sizes, loop)
        after = _cpu(pids)
    answered = max(1, load.requests)
    cpu = {role: (after[role] - before[role]) / answered * 1e6 for role in after}
    return CoresRun(name, load, cpu)


HEADER = ["setup", "req/s", "p50 ms", "p99 ms", "errors", "edge CPU/req", "worker CPU/req"]
ALIGN = "lrrrrrr"


def _row(run: CoresRun) -> list[str]:
    load = run.load
    return [
        run.setup,
        f"{load.rps:,.0f}",
        f"{load.p50_ms:.2f}",
        f"{load.p99_ms:.2f}",
        str(load.errors),
        f"{run.cpu_us['edge']:,.0f} µs",
        f"{run.cpu_us['worker']:,.0f} µs",
    ]


def _median(runs: list[CoresRun]) -> CoresRun:
    return sorted(runs, key=lambda run: run.load.rps)[len(runs) // 2]


def main(
    sizes: bench_http.HttpSizes = bench_http.FULL, *, loop: str = "asyncio", write: bool = True
) -> bool:
    load_before = load_average()
    print(f"cores: 1+1 vs 2+2 processes, {os.cpu_count()} cores, hello world", flush=True)
    runs: dict[str, list[CoresRun]] = {name: [] for name in SETUPS}
    for round_number in range(sizes.runs):
        for name, processes in SETUPS.items():
            result = measure(name, processes, sizes, loop)
            runs[name].append(result)
            print(
                f"  {name:20s} run {round_number + 1}/{sizes.runs}: " + " ".join(_row(result)[1:])
            )
    medians = [_median(each) for each in runs.values()]
    one, two = medians
    ratio = two.load.rps / one.load.rps if one.load.rps else 0.0
    p99 = two.load.p99_ms / one.load.p99_ms if one.load.p99_ms else 0.0
    print()
    print(plain_table(HEADER, [_row(run) for run in medians], ALIGN))
    print(f"\n2+2 / 1+1: req/s {ratio:.2f}x, p99 {p99:.2f}x (medians of {sizes.runs} runs)")
    errors = sum(run.load.errors for each in runs.values() for run in each)
    if write:
        facts = machine_facts()
        body = "\n".join(
            [
                "## Every core: 2 edge and 2 worker processes beside 1 and 1",
                "",
                f"Recorded {facts['date']} by `make bench` (`python -m bench cores`) on"
                f" {facts['cores']} cores ({facts['cpu']}); load average {load_before} before,"
                f" {load_average()} after. `edge --workers 2` and `worker --processes 2` against"
                " one of each, the hello world at 32 keep-alive connections, medians of"
                f" {sizes.runs} runs in rotation; CPU summed over each role's processes.",
                "",
                markdown_table(HEADER, [_row(run) for run in medians], ALIGN),
                "",
                f"2+2 / 1+1: **req/s {ratio:.2f}x**, p99 {p99:.2f}x.",
                "",
                "On 2 cores this cannot show scaling: one edge and one worker already keep both"
                " cores busy, with Redis and the load generator beside them, so two of each only"
                " share the same cores (and pay for the switching between four busy processes)."
                " It shows that the processes run side by side correctly (errors above) and what"
                " they cost each other; what a machine with cores to spare gains was not measured"
                " here (each process uses at most one core, so up to one core's worth each is"
                " the most it can add).",
            ]
        )
        replace_section(SECTION, body)
        print(f"(written to docs/benchmarks.md, section {SECTION})")
    return errors == 0


if __name__ == "__main__":
    sys.exit(0 if main(bench_http.QUICK if "--quick" in sys.argv else bench_http.FULL) else 1)
