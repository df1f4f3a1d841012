"""``python -m bench.profile``: where the edge's and the worker's time goes under the HTTP load.

The gateway of ``bench http`` (one edge, one worker, a private Redis, the hello world), each
process started under cProfile (``python -m bench.profiled FILE distributed_asgi ...``), then
the same load as ``bench http`` (wrk at 32 keep-alive connections when it is on PATH). The
profilers are switched on (SIGUSR1) after the warm-up and off again when the measured load
ends, so the profiles hold that load only; on SIGTERM both processes stop cleanly and write
them; the summary of each (the top entries by cumulative and by own time) is written as text.

cProfile sees Python functions only. Profiling starts inside the running loop, so the loop's own
C code and its waits for I/O belong to no entry; time in C code called from Python (socket
writes, parsers) is its caller's own time. A coroutine counts one call each time it is resumed.
cProfile slows each process down, more for code that makes many small calls: read the shares,
not the times.
"""

from __future__ import annotations

import argparse
import contextlib
import pstats
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distributed_asgi.ops.redis_process import RedisProcess, free_port

from . import http as bench_http
from .report import ROOT, git_revision, machine_facts

__all__ = ["Profiles", "main", "profile_gateway", "summary"]


@dataclass
class Profiles:
    edge: Path  # cProfile's binary output (pstats)
    worker: Path
    load: bench_http.Load


def _profiled(output: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "bench.profiled", str(output), "distributed_asgi", *args]


@contextlib.contextmanager
def _gateway(folder: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]], Path, Path]]:
    port = free_port()
    edge_out, worker_out = folder / "edge.prof", folder / "worker.prof"
    with RedisProcess() as redis:
        layer = ["--redis", redis.url, "--prefix", "bench-profile"]
        worker_args = ["worker", bench_http.APP, "--key", "hello", *layer]
        worker_args += ["--loop", bench_http.event_loop(), "--log-level", "warning"]
        node = bench_http._start(_profiled(worker_out, worker_args))
        edge_args = ["edge", "--route", "/=hello", "--host", "127.0.0.1", "--port", str(port)]
        edge_args += [*layer, *bench_http._uvicorn_settings()]
        edge = bench_http._start(_profiled(edge_out, edge_args))
        try:
            bench_http._wait_until_correct(port, [node, edge])
            yield port, [edge, node], edge_out, worker_out
        finally:
            # The edge first (it finishes its requests while the worker still runs); each
            # writes its profile as it exits.
            bench_http._stop([edge, node])


def _toggle(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGUSR1)


def profile_gateway(folder: Path, sizes: bench_http.HttpSizes, loop: str = "asyncio") -> Profiles:
    """Run the profiled gateway under ``sizes``' load; the two profiles and the load figures."""
    with _gateway(folder) as (port, processes, edge_out, worker_out):
        bench_http.measure(port, sizes, loop, duration=sizes.warmup)
        _toggle(processes)
        try:
            load = bench_http.measure(port, sizes, loop)
        finally:
            _toggle(processes)
    for path in (edge_out, worker_out):
        if not path.exists():
            raise RuntimeError(f"{path.name} was not written: the process did not exit cleanly")
    return Profiles(edge=edge_out, worker=worker_out, load=load)


def _prefixes() -> list[str]:
    """Path prefixes cut from file names in the summary, longest first."""
    paths = {str(ROOT) + "/", sysconfig.get_paths()["stdlib"] + "/"}
    paths |= {path + "/" for path in site.getsitepackages()}
    return sorted(paths, key=len, reverse=True)


# Entries called once or twice that hold most of the time are the chain from the interpreter's
# start to the event loop (runpy, click, uvicorn.run, asyncio.run): they say nothing about where
# the time goes.
_WRAPPER_SHARE = 0.5
_WRAPPER_CALLS = 2


def _name(key: tuple[str, int, str]) -> str:
    file, line, function = key
    return function if file == "~" else f"{file}:{line}({function})"


def summary(path: Path, title: str, top: int = 15, requests: int = 0) -> str:
    """The top ``top`` entries by cumulative time and by own time (tottime), as text, each with
    its share of the profiled total; with ``requests`` (those served meanwhile), the calls per
    request too: the interpreter's work per request, which the profiler's overhead leaves as
    it is."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in entries.values()) or 1e-9
    calls = stats.total_calls  # type: ignore[attr-defined]
    per_request = f" ({calls / requests:,.0f} a request)" if requests else ""
    lines = [title, "", f"{calls:,} calls{per_request}, {total:.2f} s in Python functions"]
    header = f"{'calls':>10} {'tottime':>8} {'cumtime':>8} {'cum %':>6} {'own %':>6}  function"
    orders = (("cumulative time", 3), ("own time (tottime)", 2))
    for label, index in orders:
        ranked = sorted(entries.items(), key=lambda item: -item[1][index])
        if index == 3:  # leave out the start-up chain that holds everything
            ranked = [
                item
                for item in ranked
                if item[1][1] > _WRAPPER_CALLS or item[1][3] < _WRAPPER_SHARE * total
            ]
        lines += ["", f"== top {top} by {label}", header]
        for key, (_, calls, tt, ct, _) in ranked[:top]:
            lines.append(
                f"{calls:>10,} {tt:>8.3f} {ct:>8.3f} {ct / total:>6.1%} {tt / total:>6.1%}  "
                + _name(key)
            )
    text = "\n".join(lines) + "\n"
    for prefix in _prefixes():
        text = text.replace(prefix, "")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--top", type=int, default=15, help="entries of each listing")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the summaries (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="distributed-asgi-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = bench_http.HttpSizes(
        connections=args.connections, duration=args.seconds, warmup=args.warmup, runs=1
    )
    generator = bench_http.generator_text("asyncio")
    print(f"profile: the gateway under {generator}, {sizes.connections} connections", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        profiles = profile_gateway(Path(folder), sizes)
        load = profiles.load
        facts = machine_facts()
        header = (
            f"{facts['date']}, {facts['cores']} cores, distributed_asgi at {git_revision()};"
            f" load: {generator}, {sizes.connections} connections, {sizes.duration:.0f} s after"
            f" {sizes.warmup:.0f} s warm-up: {load.rps:,.0f} req/s under cProfile,"
            f" {load.errors} errors"
        )
        for name, path in (("edge", profiles.edge), ("worker", profiles.worker)):
            text = summary(path, f"cProfile of the {name} ({header})", args.top, load.requests)
            target = out / f"profile-{name}.txt"
            target.write_text(text)
            shutil.copyfile(path, out / f"profile-{name}.prof")  # for pstats' own views
            print(f"  {name}: {target} (pstats: {out / f'profile-{name}.prof'})")
    return 0 if load.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
