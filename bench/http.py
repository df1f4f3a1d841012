"""HTTP: one hello-world app, served directly by uvicorn and through the gateway, side by side.

Rules of this file:

- Both setups run the same app with the same uvicorn settings (uvloop and httptools when
  installed, one process, no access log); the gateway adds one worker and a private Redis
  server on loopback. Every server is a subprocess started the way users start it.
- The load is a fixed number of keep-alive connections for a fixed time: ``wrk`` when it is on
  PATH, else the asyncio generator below. Every response is checked (status and body); a wrong
  or missing one fails the run whatever the speed.
- The setups are measured in rotation (direct, gateway, direct, ...) and each figure's median
  counts, so a noisy neighbour hurts both alike.
- What each run costs is read from the processes and from Redis (``bench.counters``): the CPU of
  every process (direct uvicorn; the edge, the worker and Redis) from ``/proc`` over the run,
  and Redis's ``INFO commandstats`` after a ``CONFIG RESETSTAT``, each divided by the requests
  answered. The targets are ratios against direct uvicorn in the same run, never absolute times.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from distributed_asgi.ops.redis_process import RedisProcess, free_port

from . import chart
from .counters import RedisCounters, measured
from .report import (
    ROOT,
    git_revision,
    load_average,
    machine_facts,
    markdown_table,
    package_version,
    plain_table,
    replace_section,
)

__all__ = ["FULL", "QUICK", "HttpSizes", "Outcome", "Run", "Setup", "hello_app", "main"]

T = TypeVar("T")

SECTION = "http-bench"
APP = "bench.http:hello_app"
BODY = b"Hello, world!"
TARGET_THROUGHPUT_RATIO = 0.40  # gateway req/s / direct req/s, at least
TARGET_P99_RATIO = 3.0  # gateway p99 / direct p99, at most
# CPU per request of each gateway process / direct uvicorn's CPU per request, at most.
TARGET_CPU_RATIOS = {"edge": 2.5, "worker": 2.0, "redis": 0.5}
TARGET_COMMANDS = 6.0  # Redis commands per request (as Redis counts them), at most
TARGET_SCRIPTS = 1.0  # script calls per request, at most
WRK_HINT = "install wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)"


@dataclass(frozen=True)
class HttpSizes:
    connections: int  # keep-alive connections held open by the load generator
    duration: float  # seconds of load per measured run
    warmup: float  # seconds of load before the first measured run of each setup
    runs: int  # measured runs per setup, in rotation; the median counts
    # Seconds of one request at a time (one connection) per setup, measured after its first
    # run: the cost of one request with nothing to batch it with. 0 skips it.
    single: float = 0.0


FULL = HttpSizes(connections=32, duration=10.0, warmup=2.0, runs=3, single=5.0)
QUICK = HttpSizes(connections=8, duration=2.0, warmup=0.5, runs=1, single=1.0)


# -- the app ----------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest honest ASGI app: 200, two headers, a 13-byte body; a WebSocket is accepted
    and echoes every message until the client leaves (``bench.idle`` holds such connections)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _echo(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def _echo(receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


# -- the servers ------------------------------------------------------------------------------


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def event_loop() -> str:
    """uvloop for every server process when it is installed (the bench venv has it)."""
    return "uvloop" if _installed("uvloop") else "asyncio"


def run_in(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """``main``'s result, run in a new event loop of ``loop``'s kind ("uvloop" or "asyncio")."""
    if loop == "uvloop":
        uvloop = importlib.import_module("uvloop")
        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)


def http_parser() -> str:
    return "httptools" if _installed("httptools") else "h11"


def _uvicorn_settings() -> list[str]:
    # Identical for the direct server and the edge, named rather than "auto" so a missing
    # package shows in the section's text instead of silently changing what is compared.
    settings = ["--loop", event_loop(), "--http", http_parser()]
    return [*settings, "--no-access-log", "--log-level", "warning"]


def missing_speedups() -> list[str]:
    return [name for name in ("uvloop", "httptools") if not _installed(name)]


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


@dataclass
class Setup:
    """A running setup: where to send the load, and the processes whose costs count."""

    port: int
    pids: dict[str, int]  # role ("uvicorn"; or "edge", "worker", "redis") -> pid
    redis_url: str | None = None


@contextlib.contextmanager
def direct_server(extra: Sequence[str] = ()) -> Iterator[Setup]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", APP, "--port", str(port)]
    server = _start([*args, "--host", "127.0.0.1", *_uvicorn_settings(), *extra])
    try:
        _wait_until_correct(port, [server])
        yield Setup(port, {"uvicorn": server.pid})
    finally:
        _stop([server])


@contextlib.contextmanager
def gateway_server(
    edge_extra: Sequence[str] = (), worker_extra: Sequence[str] = ()
) -> Iterator[Setup]:
    port = free_port()
    with RedisProcess() as redis:
        cli = [sys.executable, "-m", "distributed_asgi"]
        layer = ["--redis", redis.url, "--prefix", "bench-http"]
        worker_args = [*cli, "worker", APP, "--key", "hello", *layer, "--loop", event_loop()]
        node = _start([*worker_args, "--log-level", "warning", *worker_extra])
        edge_args = [*cli, "edge", "--route", "/=hello", "--host", "127.0.0.1"]
        edge = _start([*edge_args, "--port", str(port), *layer, *_uvicorn_settings(), *edge_extra])
        try:
            _wait_until_correct(port, [node, edge])
            pids = {"edge": edge.pid, "worker": node.pid}
            if redis.process is not None:
                pids["redis"] = redis.process.pid
            yield Setup(port, pids, redis.url)
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
    return run_in(loop, _python_load(port, connections, duration, paths))


# -- the run ----------------------------------------------------------------------------------


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def measure(
    port: int,
    sizes: HttpSizes,
    loop: str,
    duration: float | None = None,
    paths: Sequence[str] = ("/",),
    connections: int | None = None,
) -> Load:
    """One load run; several ``paths`` are taken in turn (wrk) or one per connection."""
    seconds = sizes.duration if duration is None else duration
    held = sizes.connections if connections is None else connections
    if load_generator() == "wrk":
        return run_wrk(port, held, seconds, paths)
    return run_python(port, held, seconds, loop, paths)


ROLES = {"direct": ("uvicorn",), "gateway": ("edge", "worker", "redis")}


@dataclass
class Run:
    """One measured load run of one setup, and what it cost each process and Redis."""

    load: Load
    wall: float  # seconds the measured load ran
    cpu: dict[str, float | None] = field(default_factory=dict)  # role -> CPU seconds
    redis: RedisCounters | None = None  # the gateway's Redis, over the run

    @property
    def answered(self) -> int:
        return max(1, self.load.requests)

    def cpu_us(self, role: str) -> float | None:
        """µs of the role's CPU per answered request."""
        seconds = self.cpu.get(role)
        if seconds is None and role == "redis" and self.redis is not None:
            seconds = self.redis.cpu  # Redis's own account, where its pid is unknown
        return None if seconds is None else seconds / self.answered * 1e6

    def cores(self, role: str) -> float | None:
        seconds = self.cpu.get(role)
        return None if seconds is None or not self.wall else seconds / self.wall

    @property
    def commands(self) -> float | None:
        return None if self.redis is None else self.redis.total / self.answered

    @property
    def scripts(self) -> float | None:
        return None if self.redis is None else self.redis.scripts / self.answered

    def by_command(self) -> list[tuple[str, float]]:
        if self.redis is None:
            return []
        calls = sorted(self.redis.commands.items(), key=lambda item: -item[1])
        return [(name, count / self.answered) for name, count in calls if count > 0]


def _median(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


@dataclass
class Outcome:
    runs: dict[str, list[Run]]  # "direct" / "gateway" -> every run, in order
    # "direct" / "gateway" -> its run of one request at a time (empty when not measured)
    single: dict[str, Run] = field(default_factory=dict)

    def median_run(self, setup: str) -> Run:
        ordered = sorted(self.runs[setup], key=lambda run: run.load.rps)
        return ordered[len(ordered) // 2]

    @property
    def direct(self) -> Load:
        return self.median_load("direct")

    @property
    def gateway(self) -> Load:
        return self.median_load("gateway")

    def median_load(self, setup: str) -> Load:
        """Each figure's median over the setup's runs (one slow moment in one run moves a p99
        far: the median of the p99s, not the p99 of the median run)."""
        loads = [run.load for run in self.runs[setup]]
        seconds = statistics.median(load.seconds for load in loads)
        return Load(
            requests=round(statistics.median(load.rps for load in loads) * seconds),
            seconds=seconds,
            p50_ms=statistics.median(load.p50_ms for load in loads),
            p99_ms=statistics.median(load.p99_ms for load in loads),
            errors=sum(load.errors for load in loads),
        )

    def cpu_us(self, setup: str, role: str) -> float | None:
        """The median over the setup's runs of the role's CPU per request."""
        return _median([run.cpu_us(role) for run in self.runs[setup]])

    @property
    def direct_cpu_us(self) -> float | None:
        return self.cpu_us("direct", "uvicorn")

    def cpu_ratio(self, role: str) -> float | None:
        return _ratio(self.cpu_us("gateway", role), self.direct_cpu_us)

    @property
    def commands(self) -> float | None:
        return _median([run.commands for run in self.runs["gateway"]])

    @property
    def scripts(self) -> float | None:
        return _median([run.scripts for run in self.runs["gateway"]])

    @property
    def throughput_ratio(self) -> float:
        return self.gateway.rps / self.direct.rps if self.direct.rps else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.gateway.p99_ms / self.direct.p99_ms if self.direct.p99_ms else float("inf")

    @property
    def correct(self) -> bool:
        return all(run.load.errors == 0 for runs in self.runs.values() for run in runs)

    def verdicts(self) -> list[tuple[str, bool]]:
        def at_most(value: float | None, limit: float, unit: str = "x") -> tuple[str, bool]:
            if value is None:
                return "not measured", False
            # Judged as shown (two decimals): Redis counts the commands of the requests still
            # in flight when the window closes (up to one per connection), wrk does not count
            # those requests, so a per-request figure is a few tenths of a percent high.
            return f"{value:.2f}{unit}", round(value, 2) <= limit

        out = [
            (
                f"gateway req/s >= {TARGET_THROUGHPUT_RATIO:.2f}x direct: "
                f"{self.throughput_ratio:.2f}x",
                self.throughput_ratio >= TARGET_THROUGHPUT_RATIO,
            ),
            (
                f"gateway p99 <= {TARGET_P99_RATIO:.0f}x direct: {self.p99_ratio:.2f}x",
                self.p99_ratio <= TARGET_P99_RATIO,
            ),
        ]
        for role, limit in TARGET_CPU_RATIOS.items():
            text, ok = at_most(self.cpu_ratio(role), limit)
            name = "Redis" if role == "redis" else role
            out.append((f"{name} CPU per request <= {limit}x direct uvicorn's: {text}", ok))
        text, ok = at_most(self.commands, TARGET_COMMANDS, "")
        out.append((f"Redis commands per request <= {TARGET_COMMANDS:.0f}: {text}", ok))
        text, ok = at_most(self.scripts, TARGET_SCRIPTS, "")
        out.append((f"script calls per request <= {TARGET_SCRIPTS:.0f}: {text}", ok))
        out.append(("every response correct (status 200, exact body)", self.correct))
        return out


def measure_run(
    setup: Setup,
    sizes: HttpSizes,
    loop: str,
    *,
    connections: int | None = None,
    duration: float | None = None,
) -> Run:
    """One measured load run, with the CPU of each process and Redis's counters around it."""
    with measured(setup.pids, setup.redis_url) as window:
        load = measure(setup.port, sizes, loop, duration=duration, connections=connections)
    return Run(load=load, wall=window.seconds, cpu=window.cpu, redis=window.redis)


def run(sizes: HttpSizes, loop: str = "asyncio") -> Outcome:
    setups = {"direct": direct_server, "gateway": gateway_server}
    runs: dict[str, list[Run]] = {name: [] for name in setups}
    single: dict[str, Run] = {}
    # Servers stay up across the runs of one setup, so run them in rotation by restarting:
    # start-up is cheap next to a run, and rotation spreads any background noise evenly.
    for round_number in range(sizes.runs):
        for name, start in setups.items():
            with start() as setup:
                measure(setup.port, sizes, loop, duration=sizes.warmup)
                result = measure_run(setup, sizes, loop)
                runs[name].append(result)
                print(f"  {name:8s} run {round_number + 1}/{sizes.runs}: {_run_line(result)}")
                if round_number == 0 and sizes.single > 0:
                    alone = measure_run(setup, sizes, loop, connections=1, duration=sizes.single)
                    single[name] = alone
                    print(f"  {name:8s} one at a time: {_run_line(alone)}")
    return Outcome(runs, single)


def _run_line(result: Run) -> str:
    load = result.load
    costs = ", ".join(f"{role} {_us(result.cpu_us(role))}" for role in result.cpu)
    line = (
        f"{load.rps:9.0f} req/s  p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms  "
        f"errors {load.errors}  CPU/req: {costs}"
    )
    if result.commands is not None:
        line += f"  Redis {result.commands:.1f} cmd/req ({result.scripts:.2f} scripts)"
    return line


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} µs"


def _fixed(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


RUN_HEADER = [
    "setup",
    "run",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "uvicorn or edge CPU/req",
    "worker CPU/req",
    "Redis CPU/req",
    "Redis cmds/req",
    "scripts/req",
]
RUN_ALIGN = "lrrrrrrrrrr"


def run_rows(outcome: Outcome) -> list[list[str]]:
    """Every run of every setup, in order, with what it cost each process."""
    rows = []
    for name, runs in outcome.runs.items():
        front = "uvicorn" if name == "direct" else "edge"
        for number, result in enumerate(runs, 1):
            load = result.load
            rows.append(
                [
                    name,
                    str(number),
                    f"{load.rps:,.0f}",
                    f"{load.p50_ms:.2f}",
                    f"{load.p99_ms:.2f}",
                    str(load.errors),
                    _us(result.cpu_us(front)),
                    _us(result.cpu_us("worker")) if name == "gateway" else "-",
                    _us(result.cpu_us("redis")) if name == "gateway" else "-",
                    _fixed(result.commands),
                    _fixed(result.scripts),
                ]
            )
    return rows


HEADER = ["figure", "direct", "gateway", "gateway / direct", "target", "result"]
ALIGN = "lrrrll"


def table_rows(outcome: Outcome) -> list[list[str]]:
    """Medians side by side, as ratios against direct uvicorn, with each target's verdict."""
    verdict = {index: ok for index, (_, ok) in enumerate(outcome.verdicts())}

    def mark(index: int) -> str:
        return "PASS" if verdict[index] else "MISSED"

    direct, gateway = outcome.direct, outcome.gateway
    rows = [
        [
            "req/s",
            f"{direct.rps:,.0f}",
            f"{gateway.rps:,.0f}",
            _times(outcome.throughput_ratio),
            f">= {TARGET_THROUGHPUT_RATIO:.2f}x",
            mark(0),
        ],
        [
            "p50 ms",
            f"{direct.p50_ms:.2f}",
            f"{gateway.p50_ms:.2f}",
            _times(_ratio(gateway.p50_ms, direct.p50_ms)),
            "-",
            "",
        ],
        [
            "p99 ms",
            f"{direct.p99_ms:.2f}",
            f"{gateway.p99_ms:.2f}",
            _times(outcome.p99_ratio),
            f"<= {TARGET_P99_RATIO:.0f}x",
            mark(1),
        ],
    ]
    for index, (role, limit) in enumerate(TARGET_CPU_RATIOS.items(), 2):
        rows.append(
            [
                f"{'Redis' if role == 'redis' else role} CPU per request",
                f"{_us(outcome.direct_cpu_us)} (uvicorn)",
                _us(outcome.cpu_us("gateway", role)),
                _times(outcome.cpu_ratio(role)),
                f"<= {limit}x",
                mark(index),
            ]
        )
    total = _sum_known([outcome.cpu_us("gateway", role) for role in ROLES["gateway"]])
    rows.append(
        [
            "all processes' CPU per request",
            _us(outcome.direct_cpu_us),
            _us(total),
            _times(_ratio(total, outcome.direct_cpu_us)),
            "-",
            "",
        ]
    )
    rows.append(
        [
            "Redis commands per request",
            "-",
            _fixed(outcome.commands),
            "-",
            f"<= {TARGET_COMMANDS:.0f}",
            mark(5),
        ]
    )
    rows.append(
        [
            "script calls per request",
            "-",
            _fixed(outcome.scripts),
            "-",
            f"<= {TARGET_SCRIPTS:.0f}",
            mark(6),
        ]
    )
    errors = {name: sum(r.load.errors for r in runs) for name, runs in outcome.runs.items()}
    rows.append(
        ["errors (all runs)", str(errors["direct"]), str(errors["gateway"]), "-", "0", mark(7)]
    )
    return rows


SINGLE_HEADER = ["one request at a time", "direct", "gateway", "gateway / direct"]
SINGLE_ALIGN = "lrrr"


def single_rows(outcome: Outcome) -> list[list[str]]:
    """The run of one connection of each setup side by side: the cost of a request that
    shares no write, read or pop round with another (no targets: the targets are at the
    concurrency of the main runs)."""
    direct, gateway = outcome.single["direct"], outcome.single["gateway"]
    base = direct.cpu_us("uvicorn")
    rows = []
    for label, figure, shown in (
        ("req/s", "rps", "{:,.0f}"),
        ("p50 ms", "p50_ms", "{:.2f}"),
        ("p99 ms", "p99_ms", "{:.2f}"),
    ):
        mine, theirs = getattr(gateway.load, figure), getattr(direct.load, figure)
        rows.append([label, shown.format(theirs), shown.format(mine), _times(_ratio(mine, theirs))])
    for role in ROLES["gateway"]:
        name = "Redis" if role == "redis" else role
        rows.append(
            [
                f"{name} CPU per request",
                f"{_us(base)} (uvicorn)",
                _us(gateway.cpu_us(role)),
                _times(_ratio(gateway.cpu_us(role), base)),
            ]
        )
    total = _sum_known([gateway.cpu_us(role) for role in ROLES["gateway"]])
    rows.append(
        ["all processes' CPU per request", _us(base), _us(total), _times(_ratio(total, base))]
    )
    rows.append(["Redis commands per request", "-", _fixed(gateway.commands), "-"])
    rows.append(["script calls per request", "-", _fixed(gateway.scripts), "-"])
    rows.append(["errors", str(direct.load.errors), str(gateway.load.errors), "-"])
    return rows


def _sum_known(values: Sequence[float | None]) -> float | None:
    return None if any(value is None for value in values) else sum(v or 0.0 for v in values)


def commands_text(outcome: Outcome) -> str:
    """The median gateway run's Redis commands per request, by command."""
    calls = outcome.median_run("gateway").by_command()
    return ", ".join(f"{name.upper()} {count:.2f}" for name, count in calls) or "none counted"


def chart_panels(outcome: Outcome) -> list[chart.Panel]:
    """Throughput and both latencies, direct beside gateway; CPU per request of each process."""
    setups = {"direct": outcome.direct, "gateway": outcome.gateway}
    cpu = {"direct": outcome.direct_cpu_us}
    cpu |= {role: outcome.cpu_us("gateway", role) for role in ROLES["gateway"]}
    return [
        chart.Panel("throughput", "req/s", {n: load.rps for n, load in setups.items()}),
        chart.Panel("p50 latency", "ms", {n: load.p50_ms for n, load in setups.items()}, False),
        chart.Panel("p99 latency", "ms", {n: load.p99_ms for n, load in setups.items()}, False),
        chart.Panel("CPU per request", "µs", cpu, False),
    ]


def generator_text(loop: str) -> str:
    if load_generator() == "wrk":
        return "wrk, 1 thread"
    return f"the bundled asyncio generator ({loop}; wrk was not on PATH)"


def markdown(
    outcome: Outcome, sizes: HttpSizes, loop: str, load_before: str, image: str | None = None
) -> str:
    facts = machine_facts()
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
        f"uvicorn settings, identical for both: one process, `--loop {event_loop()} --http"
        f" {http_parser()}`, no access log; the worker runs on `--loop {event_loop()}`",
        f"Load: {generator_text(loop)}, {sizes.connections} keep-alive connections for"
        f" {sizes.duration:.0f} s per run after a {sizes.warmup:.0f} s warm-up; {sizes.runs}"
        " run(s) per setup in rotation, the median of each figure shown; every response checked"
        " (status and body)",
        "Costs per request: each process's CPU (user + system) from `/proc/PID/stat` over the"
        " measured run; Redis's commands from `INFO commandstats` after `CONFIG RESETSTAT`"
        " (the commands a script runs count under their own names, and the script call once as"
        " `EVALSHA`); each divided by the requests answered; the medians over the runs",
        "The load generator, the servers and Redis share the machine's cores: the gateway's three"
        " processes compete with the load generator more than direct uvicorn's one does",
    ]
    verdicts = [f"- {'PASS' if ok else 'MISSED'}: {text}" for text, ok in outcome.verdicts()]
    return "\n".join(
        [
            "## HTTP: direct uvicorn vs. through the gateway",
            "",
            f"Recorded {facts['date']} by `make bench` (`python -m bench http`).",
            "",
            *(f"- {bullet}" for bullet in bullets),
            "",
            *([image, ""] if image else []),
            markdown_table(HEADER, table_rows(outcome), ALIGN),
            "",
            f"Redis commands per request (median gateway run): {commands_text(outcome)}.",
            "",
            "Every run, in order (the setups rotate):",
            "",
            markdown_table(RUN_HEADER, run_rows(outcome), RUN_ALIGN),
            "",
            *verdicts,
            *_single_markdown(outcome, sizes),
        ]
    )


def _single_markdown(outcome: Outcome, sizes: HttpSizes) -> list[str]:
    if len(outcome.single) < 2:
        return []
    return [
        "",
        f"One request at a time: each setup's first server also served {sizes.single:.0f} s of"
        " load on one keep-alive connection (the next request sent when the last is answered),"
        " measured the same way. Every request then pays each hop's write, read and pop round"
        " alone; the figures above show what sharing them across connections buys. No target"
        " is set here.",
        "",
        markdown_table(SINGLE_HEADER, single_rows(outcome), SINGLE_ALIGN),
    ]


def main(sizes: HttpSizes = FULL, *, loop: str = "asyncio", write: bool = True) -> bool:
    """Run both setups, print the table, update docs/benchmarks.md; True if every target met."""
    load_before = load_average()
    print(
        f"http: hello world, direct uvicorn vs. gateway; {generator_text(loop)}, "
        f"{sizes.connections} connections x {sizes.duration:.0f} s, {sizes.runs} run(s) each",
        flush=True,
    )
    if load_generator() != "wrk":
        print(f"  note: {WRK_HINT} for the recorded figures: the asyncio generator takes CPU")
    for name in missing_speedups():
        print(f"  note: {name} is not installed (pip install -e '.[bench]'); both setups run")
        print("        without it, so the comparison holds but is not the one recorded")
    outcome = run(sizes, loop)
    print()
    print(plain_table(HEADER, table_rows(outcome), ALIGN))
    print()
    print(f"Redis commands per request (median gateway run): {commands_text(outcome)}")
    print()
    print(plain_table(RUN_HEADER, run_rows(outcome), RUN_ALIGN))
    print()
    for text, ok in outcome.verdicts():
        print(f"{'PASS  ' if ok else 'MISSED'}  {text}")
    if len(outcome.single) == 2:
        print()
        print(plain_table(SINGLE_HEADER, single_rows(outcome), SINGLE_ALIGN))
    image = chart.record(
        SECTION,
        f"HTTP hello world: direct uvicorn vs. the gateway ({sizes.connections} connections)",
        chart_panels(outcome),
        write=write,
        alt="HTTP: requests per second, p50/p99 latency and CPU per request of each process,"
        " direct uvicorn beside the gateway",
        note=f"{machine_facts()['date']}, {os.cpu_count()} cores, median of {sizes.runs} run(s)",
    )
    if write:
        replace_section(SECTION, markdown(outcome, sizes, loop, load_before, image))
        print(f"(written to docs/benchmarks.md, section {SECTION})")
    print(flush=True)
    return all(ok for _, ok in outcome.verdicts())


if __name__ == "__main__":
    sys.exit(0 if main(QUICK if "--quick" in sys.argv else FULL) else 1)
