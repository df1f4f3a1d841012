"""``python -m bench ab REV``: this tree's gateway against REV's, in alternating runs.

On a shared machine a change of a few percent is lost in the drift between runs (direct
uvicorn alone moves by half within an hour here). Alternating the two builds run after run and
comparing medians is what shows it. Each run starts bench/http.py's gateway (one edge, one
worker, a private Redis) from one tree and measures a load as the http section does
(``measure_run``: each process's CPU and Redis's commands per request), with the edge's and
worker's write system calls per request from /proc. REV is checked out in a temporary git
worktree, removed afterwards. Nothing is written to the docs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .report import checked_out, plain_table

__all__ = ["FIGURES", "main", "summary_rows"]

ROOT = Path(__file__).resolve().parents[1]

# (key in a run's figures, label); the CPU ones are µs per request, the calls per request.
FIGURES = [
    ("rps", "req/s"),
    ("p99", "p99 ms"),
    ("edge", "edge CPU per request (µs)"),
    ("worker", "worker CPU per request (µs)"),
    ("redis", "Redis CPU per request (µs)"),
    ("commands", "Redis commands per request"),
    ("edge_writes", "edge write calls per request"),
    ("worker_writes", "worker write calls per request"),
]

# One gateway from the tree it runs in (its cwd): warm-up, then `runs` measured loads.
_RUN = r"""
import json, sys
sys.path.insert(0, ".")
from bench.http import HttpSizes, gateway_server, measure, measure_run

def writes(pid):
    fields = dict(line.split(": ") for line in open(f"/proc/{pid}/io").read().splitlines())
    return int(fields["syscw"])

connections, seconds, runs = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
sizes = HttpSizes(connections=connections, duration=seconds, warmup=1.0, runs=1, single=0)
out = []
with gateway_server() as setup:
    measure(setup.port, sizes, "asyncio", duration=1.0)
    for _ in range(runs):
        calls = {role: writes(setup.pids[role]) for role in ("edge", "worker")}
        result = measure_run(setup, sizes, "asyncio")
        row = {"rps": result.load.rps, "p99": result.load.p99_ms, "commands": result.commands}
        row.update({role: result.cpu_us(role) for role in ("edge", "worker", "redis")})
        for role, before in calls.items():
            row[f"{role}_writes"] = (writes(setup.pids[role]) - before) / result.answered
        out.append({key: value for key, value in row.items() if value is not None})
print(json.dumps(out))
"""


def _gateway_runs(
    tree: Path, connections: int, seconds: float, runs: int
) -> list[dict[str, float]]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(connections), str(seconds), str(runs)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def summary_rows(
    this: Sequence[dict[str, float]], base: Sequence[dict[str, float]]
) -> list[list[str]]:
    """[figure, this tree's median, REV's median, this / REV] for each figure both have."""
    rows = []
    for key, label in FIGURES:
        mine = [run[key] for run in this if key in run]
        theirs = [run[key] for run in base if key in run]
        if not mine or not theirs:
            continue
        a, b = statistics.median(mine), statistics.median(theirs)
        digits = 2 if key.endswith("_writes") or key == "commands" else 1
        rows.append([label, f"{a:,.{digits}f}", f"{b:,.{digits}f}", f"{a / b:.2f}x" if b else "-"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ab", description=__doc__)
    parser.add_argument("rev", help="the git revision to compare this tree with")
    parser.add_argument("--rounds", type=int, default=3, help="alternations (default: 3)")
    parser.add_argument("--runs", type=int, default=2, help="loads per gateway (default: 2)")
    parser.add_argument("--connections", type=int, default=32, help="default: 32")
    parser.add_argument("--seconds", type=float, default=6.0, help="per load (default: 6)")
    parser.add_argument(
        "--compiled", action="store_true", help="build REV compiled too (make compile)"
    )
    args = parser.parse_args(argv)
    with checked_out(args.rev, compiled=args.compiled) as base:
        results: dict[str, list[dict[str, float]]] = {"this": [], "base": []}
        for round_ in range(args.rounds):
            for name, tree in (("this", ROOT), ("base", base)):
                runs = _gateway_runs(tree, args.connections, args.seconds, args.runs)
                results[name] += runs
                rps = ", ".join(f"{run['rps']:,.0f}" for run in runs)
                print(f"  round {round_ + 1}, {name}: {rps} req/s", flush=True)
    print()
    print(
        f"this tree against {args.rev}, {args.connections} connections, medians of "
        f"{args.rounds * args.runs} runs each"
    )
    header = ["figure", "this tree", args.rev, "this / rev"]
    print(plain_table(header, summary_rows(results["this"], results["base"]), "lrrr"))
    return 0
