"""HTTP: one hello-world app, served directly by uvicorn and through the gateway, side by side.

Rules of this file:

- Both setups run the same app with the same uvicorn settings (uvloop and httptools when
  installed, one process, no access log); the gateway adds one worker and a private Redis
  server on loopback. Every server is a subprocess started the way users start it.
- The load is a fixed number of keep-alive connections for a fixed time: ``wrk`` when it is on
  PATH, else the asyncio generator below. Every response is checked (status and body); a wrong
  or missing one fails the run whatever the speed.
- The setups are measured in rotation (direct, gateway, direct, ...) and the median run counts,
  so a noisy neighbour hurts both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from distributed_asgi.redis_process import RedisProcess, free_port

from . import chart
from .report import (
    ROOT,
    git_revision,
    machine_facts,
    markdown_table,
    package_version,
    plain_table,
    replace_section,
)

__all__ = ["FULL", "QUICK", "HttpSizes", "hello_app", "main"]

SECTION = "http-bench"
APP = "bench.http:hello_app"
BODY = b"Hello, world!"
TARGET_THROUGHPUT_RATIO = 0.40  # gateway req/s / direct req/s, at least
TARGET_P99_RATIO = 3.0  # gateway p99 / direct p99, at most


@dataclass(frozen=True)
class HttpSizes:
    connections: int  # keep-alive connections held open by the load generator
    duration: float  # seconds of load per measured run
    warmup: float  # seconds of load before the first measured run of each setup
    runs: int  # measured runs per setup, in rotation; the median counts


FULL = HttpSizes(connections=32, duration=10.0, warmup=2.0, runs=3)
QUICK = HttpSizes(connections=8, duration=2.0, warmup=0.5, runs=1)


# -- the app ----------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest honest ASGI app: 200, two headers, a 13-byte body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


# -- the servers ------------------------------------------------------------------------------


def _uvicorn_settings() -> list[str]:
    # Identical for the direct server and the edge; "auto" picks uvloop/httptools if installed.
    return ["--loop", "auto", "--http", "auto", "--no-access-log", "--log-level", "warning"]


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """One after the other: the edge finishes its in-flight requests while the worker still runs."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def direct_server() -> Iterator[tuple[int, list[int]]]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", APP, "--port", str(port)]
    server = _start([*args, "--host", "127.0.0.1", *_uvicorn_settings()])
    try:
        _wait_until_correct(port, [server])
        yield port, [server.pid]
    finally:
        _stop([server])


@contextlib.contextmanager
def gateway_server() -> Iterator[tuple[int, list[int]]]:
    port = free_port()
    with RedisProcess() as redis:
        cli = [sys.executable, "-m", "distributed_asgi"]
        layer = ["--redis", redis.url, "--prefix", "bench-http"]
        node = _start([*cli, "worker", APP, "--key", "hello", *layer, "--log-level", "warning"])
        edge_args = [*cli, "edge", "--route", "/=hello", "--host", "127.0.0.1"]
        edge = _start([*edge_args, "--port", str(port), *layer, *_uvicorn_settings()])
        try:
            _wait_until_correct(port, [node, edge])
            pids = [edge.pid, node.pid]
            if redis.process is not None:
                pids.append(redis.process.pid)
            yield port, pids
        finally:
            _stop([edge, node])


def _wait_until_correct(
    port: int, processes: list[subprocess.Popen[bytes]], timeout: float = 30.0
) -> None:
    """Until one request gets the right answer; fail early if a server process died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            if answer.startswith(b"HTTP/1.1 200") and answer.endswith(BODY):
                return
            last = repr(answer[:200])
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} never answered correctly: {last}")


# -- the load generators ----------------------------------------------------------------------


@dataclass
class Load:
    requests: int  # correct responses
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # wrong responses, socket errors, timeouts

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or body ~= "Hello, world!" then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total_bad = 0
  for _, thread in ipairs(threads) do total_bad = total_bad + thread:get("bad") end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "us": %d, "bad": %d, "socket_errors": %d, "p50": %f, "p99": %f}\\n',
    summary.requests, summary.duration, total_bad,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _wrk_paths(paths: Sequence[str]) -> str:
    """Lua that turns the request path through ``paths`` (only when there are several: a
    request() function makes wrk format every request instead of reusing one)."""
    if list(paths) == ["/"]:
        return ""
    quoted = ", ".join(json.dumps(path) for path in paths)
    return (
        f"local paths = {{{quoted}}}\nlocal turn = 0\n"
        "function request()\n  turn = turn % #paths + 1\n"
        "  return wrk.format('GET', paths[turn])\nend\n"
    )


def run_wrk(port: int, connections: int, duration: float, paths: Sequence[str] = ("/",)) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT + _wrk_paths(paths))
    try:
        # One thread: the machine's cores are better spent on the servers under test.
        args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"]
        args += ["-s", script.name, f"http://127.0.0.1:{port}/"]
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    finally:
        os.unlink(script.name)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    bad, socket_errors = int(data["bad"]), int(data["socket_errors"])
    return Load(
        requests=int(data["requests"]) - bad,
        seconds=data["us"] / 1e6,
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        errors=bad + socket_errors,
    )


async def _one_connection(
    port: int, stop_at: float, latencies: list[float], errors: list[str], path: str = "/"
) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    clock = time.perf_counter
    while clock() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            errors.append(f"connect: {exc}")
            await asyncio.sleep(0.01)
            continue
        try:
            while clock() < stop_at:
                started = clock()
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                body = await _read_body(reader, head)
                latencies.append(clock() - started)
                if not head.startswith(b"HTTP/1.1 200 ") or body != BODY:
                    errors.append(f"wrong answer: {head[:40]!r} {body[:40]!r}")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    headers = head.lower()
    marker = b"\r\ncontent-length:"
    at = headers.find(marker)
    if at >= 0:
        end = headers.index(b"\r\n", at + 2)
        return await reader.readexactly(int(headers[at + len(marker) : end]))
    if b"\r\ntransfer-encoding: chunked" in headers:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return body
    return b""


async def _python_load(
    port: int, connections: int, duration: float, paths: Sequence[str] = ("/",)
) -> Load:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(
        *(
            _one_connection(port, stop_at, latencies, errors, paths[n % len(paths)])
            for n in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    if errors:
        print(f"    {len(errors)} error(s), first: {errors[0]}", file=sys.stderr)
    ordered = sorted(latencies) or [0.0]
    wrong = sum(1 for error in errors if error.startswith("wrong answer"))
    return Load(
        requests=len(latencies) - wrong,
        seconds=elapsed,
        p50_ms=_percentile(ordered, 50) * 1000,
        p99_ms=_percentile(ordered, 99) * 1000,
        errors=len(errors),
    )


def _percentile(ordered: list[float], percent: float) -> float:
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]


def run_python(
    port: int, connections: int, duration: float, loop: str, paths: Sequence[str] = ("/",)
) -> Load:
    if loop == "uvloop":
        uvloop = importlib.import_module("uvloop")
        load: Load = uvloop.run(_python_load(port, connections, duration, paths))
        return load
    return asyncio.run(_python_load(port, connections, duration, paths))


# -- the run ----------------------------------------------------------------------------------


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def measure(
    port: int,
    sizes: HttpSizes,
    loop: str,
    duration: float | None = None,
    paths: Sequence[str] = ("/",),
) -> Load:
    """One load run; several ``paths`` are taken in turn (wrk) or one per connection."""
    seconds = sizes.duration if duration is None else duration
    if load_generator() == "wrk":
        return run_wrk(port, sizes.connections, seconds, paths)
    return run_python(port, sizes.connections, seconds, loop, paths)


@dataclass
class Outcome:
    direct: Load
    gateway: Load
    runs: dict[str, list[Load]]

    @property
    def throughput_ratio(self) -> float:
        return self.gateway.rps / self.direct.rps if self.direct.rps else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.gateway.p99_ms / self.direct.p99_ms if self.direct.p99_ms else float("inf")

    @property
    def correct(self) -> bool:
        return all(load.errors == 0 for loads in self.runs.values() for load in loads)

    def verdicts(self) -> list[tuple[str, bool]]:
        return [
            (
                f"gateway req/s >= {TARGET_THROUGHPUT_RATIO:.2f} x direct: "
                f"{self.throughput_ratio:.2f}",
                self.throughput_ratio >= TARGET_THROUGHPUT_RATIO,
            ),
            (
                f"gateway p99 <= {TARGET_P99_RATIO:.0f} x direct: {self.p99_ratio:.2f}",
                self.p99_ratio <= TARGET_P99_RATIO,
            ),
            ("every response correct (status 200, exact body)", self.correct),
        ]


def run(sizes: HttpSizes, loop: str = "asyncio") -> Outcome:
    setups = {"direct": direct_server, "gateway": gateway_server}
    runs: dict[str, list[Load]] = {name: [] for name in setups}
    # Servers stay up across the runs of one setup, so run them in rotation by restarting:
    # start-up is cheap next to a run, and rotation spreads any background noise evenly.
    for round_number in range(sizes.runs):
        for name, setup in setups.items():
            with setup() as (port, _pids):
                measure(port, sizes, loop, duration=sizes.warmup)
                load = measure(port, sizes, loop)
                runs[name].append(load)
                print(
                    f"  {name:8s} run {round_number + 1}/{sizes.runs}: {load.rps:9.0f} req/s  "
                    f"p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms  "
                    f"errors {load.errors}",
                    flush=True,
                )
    median = {name: _median_run(loads) for name, loads in runs.items()}
    return Outcome(direct=median["direct"], gateway=median["gateway"], runs=runs)


def _median_run(loads: list[Load]) -> Load:
    ordered = sorted(loads, key=lambda load: load.rps)
    return ordered[len(ordered) // 2]


def table_rows(outcome: Outcome) -> list[list[str]]:
    def row(name: str, load: Load) -> list[str]:
        return [
            name,
            f"{load.rps:,.0f}",
            f"{load.p50_ms:.2f}",
            f"{load.p99_ms:.2f}",
            str(sum(run.errors for run in outcome.runs[name])),
        ]

    return [
        row("direct", outcome.direct),
        row("gateway", outcome.gateway),
        [
            "gateway / direct",
            f"{outcome.throughput_ratio:.2f}",
            f"{outcome.gateway.p50_ms / outcome.direct.p50_ms:.2f}"
            if outcome.direct.p50_ms
            else "-",
            f"{outcome.p99_ratio:.2f}",
            "",
        ],
    ]


HEADER = ["setup", "req/s", "p50 ms", "p99 ms", "errors"]


def _load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def chart_panels(outcome: Outcome) -> list[chart.Panel]:
    """Throughput and both latencies, direct beside gateway."""
    setups = {"direct": outcome.direct, "gateway": outcome.gateway}
    return [
        chart.Panel("throughput", "req/s", {n: load.rps for n, load in setups.items()}),
        chart.Panel("p50 latency", "ms", {n: load.p50_ms for n, load in setups.items()}, False),
        chart.Panel("p99 latency", "ms", {n: load.p99_ms for n, load in setups.items()}, False),
    ]


def markdown(
    outcome: Outcome, sizes: HttpSizes, loop: str, load_before: str, image: str | None = None
) -> str:
    facts = machine_facts()
    generator = load_generator()
    gen_text = "wrk, 1 thread" if generator == "wrk" else f"the bundled asyncio generator ({loop})"
    versions = ", ".join(
        f"{name} {package_version(name)}" for name in ("uvicorn", "uvloop", "httptools", "redis")
    )
    bullets = [
        f"Machine: `{facts['arch']}`, {facts['cpu']}, {facts['cores']} cores, {facts['system']};"
        f" load average before the run: {load_before}",
        f"{facts['python']}, {versions}",
        f"distributed_asgi at {git_revision()}",
        "App: the same hello world (`bench/http.py`: 200, 13-byte body) served (a) **direct** by"
        " uvicorn and (b) through the **gateway**: a uvicorn edge running the distributor, one"
        " worker (`distributed-asgi worker`), a private Redis server on loopback",
        "uvicorn settings, identical for both: one process, `--loop auto --http auto` (uvloop and"
        " httptools when installed), no access log",
        f"Load: {gen_text}, {sizes.connections} keep-alive connections for {sizes.duration:.0f} s"
        f" per run after a {sizes.warmup:.0f} s warm-up; {sizes.runs} run(s) per setup in"
        " rotation, the median by req/s shown; every response checked (status and body)",
        "The load generator, the servers and Redis share the machine's cores: the gateway's three"
        " processes compete with the load generator more than direct uvicorn's one does",
    ]
    verdicts = [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in outcome.verdicts()]
    return "\n".join(
        [
            "## HTTP: direct uvicorn vs. through the gateway",
            "",
            f"Recorded {facts['date']} by `make bench` (`python -m bench http`).",
            "",
            *(f"- {bullet}" for bullet in bullets),
            "",
            *([image, ""] if image else []),
            markdown_table(HEADER, table_rows(outcome), "lrrrr"),
            "",
            *verdicts,
        ]
    )


def main(sizes: HttpSizes = FULL, *, loop: str = "asyncio", write: bool = True) -> bool:
    """Run both setups, print the table, update docs/benchmarks.md; True if every target met."""
    load_before = _load_average()
    print(
        f"http: hello world, direct uvicorn vs. gateway; {load_generator()} load, "
        f"{sizes.connections} connections x {sizes.duration:.0f} s, {sizes.runs} run(s) each",
        flush=True,
    )
    outcome = run(sizes, loop)
    print()
    print(plain_table(HEADER, table_rows(outcome), "lrrrr"))
    for text, ok in outcome.verdicts():
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    image = chart.record(
        SECTION,
        f"HTTP hello world: direct uvicorn vs. the gateway ({sizes.connections} connections)",
        chart_panels(outcome),
        write=write,
        alt="HTTP: requests per second and p50/p99 latency, direct uvicorn beside the gateway",
        note=f"{machine_facts()['date']}, {os.cpu_count()} cores, median of {sizes.runs} run(s)",
    )
    if write:
        replace_section(SECTION, markdown(outcome, sizes, loop, load_before, image))
        print(f"(written to docs/benchmarks.md, section {SECTION})")
    print(flush=True)
    return all(ok for _, ok in outcome.verdicts())


if __name__ == "__main__":
    sys.exit(0 if main(QUICK if "--quick" in sys.argv else FULL) else 1)
