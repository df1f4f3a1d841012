"""``python -m bench idle``: what idle WebSockets cost, through the gateway and direct.

Rules of this file:

- The same app (``bench/http.py``'s hello world, whose WebSockets echo) is served direct by
  uvicorn and through the gateway (one edge, one Node, a private Redis), with the same uvicorn
  settings (``bench.http``). Every server is a subprocess started the way users start it.
- This process opens the WebSockets itself, many in one event loop (the ``websockets``
  library; no client pings, no compression, so the client adds nothing per connection), and
  checks each one: a message sent on it comes back (through the Node for the gateway) right
  after it opens, and again after the idle window.
- While every connection is idle, the measure is what the processes and Redis did anyway:
  CPU from ``/proc/PID/stat``, Redis's commands from ``INFO commandstats`` after
  ``CONFIG RESETSTAT``. Memory per connection is the growth of each process's RSS from before
  the first connection to after the last one, divided by the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import chart
from . import http as bench_http
from .counters import RedisCounters, measured, raise_fd_limit, rss_bytes
from .report import (
    git_revision,
    load_average,
    machine_facts,
    markdown_table,
    package_version,
    plain_table,
    replace_section,
)

__all__ = ["FULL", "QUICK", "IdleOutcome", "IdleRun", "IdleSizes", "main", "run"]

SECTION = "idle-bench"
TARGET_COMMANDS_PER_SECOND = 10.0  # Redis commands a second while idle, presence writes aside
TARGET_CORE_SHARE = 0.02  # edge and Node CPU while idle, at most this share of one core
# The Nodes' presence writes (``SET ... PX`` once per Node and interval, distributed_asgi.presence)
# are allowed on top of the target: they are what ``distributed-asgi status`` reads.
PRESENCE_COMMANDS = ("set",)
ECHO = "idle-bench"


@dataclass(frozen=True)
class IdleSizes:
    connections: int  # WebSockets held open through each setup
    idle: float  # seconds measured while every connection is idle
    settle: float  # seconds between the last connection opening and the measured window
    opening: int  # handshakes in flight at once
    timeout: float  # seconds one handshake, echo or close may take


FULL = IdleSizes(connections=2_000, idle=30.0, settle=3.0, opening=50, timeout=30.0)
QUICK = IdleSizes(connections=50, idle=3.0, settle=1.0, opening=25, timeout=20.0)


# -- the client -----------------------------------------------------------------------------------


def _connect(url: str, timeout: float) -> Any:
    module: Any
    try:
        module = importlib.import_module("websockets.asyncio.client")
    except ImportError:  # websockets < 13
        module = importlib.import_module("websockets")
    options: dict[str, Any] = {
        "open_timeout": timeout,
        "ping_interval": None,  # idle means idle: no client pings (the server's are answered)
        "compression": None,  # no per-connection zlib state on either side
        "close_timeout": timeout,
    }
    if hasattr(module, "ClientConnection"):
        options["proxy"] = None  # never through a proxy from the environment: loopback only
    return module.connect(url, **options)


async def _echoes(ws: Any, timeout: float) -> bool:
    await ws.send(ECHO)
    return bool(await asyncio.wait_for(ws.recv(), timeout) == ECHO)


@dataclass
class Opened:
    sockets: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def open_many(url: str, count: int, sizes: IdleSizes) -> Opened:
    """``count`` WebSockets, ``sizes.opening`` handshakes at a time, each checked by an echo."""
    opened = Opened()
    gate = asyncio.Semaphore(sizes.opening)

    async def one() -> None:
        async with gate:
            try:
                ws = await _connect(url, sizes.timeout)
            except Exception as exc:
                opened.failures.append(f"open: {type(exc).__name__}: {exc}")
                return
            try:
                if await _echoes(ws, sizes.timeout):
                    opened.sockets.append(ws)
                    return
                opened.failures.append("echo: a different message came back")
            except Exception as exc:
                opened.failures.append(f"echo: {type(exc).__name__}: {exc}")
            await ws.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return opened


async def still_answering(sockets: list[Any], sizes: IdleSizes) -> int:
    gate = asyncio.Semaphore(sizes.opening * 4)

    async def one(ws: Any) -> bool:
        async with gate:
            try:
                return await _echoes(ws, sizes.timeout)
            except Exception:
                return False

    return sum(await asyncio.gather(*(one(ws) for ws in sockets)))


async def close_all(sockets: list[Any], sizes: IdleSizes) -> None:
    gate = asyncio.Semaphore(sizes.opening * 4)

    async def one(ws: Any) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), sizes.timeout)

    await asyncio.gather(*(one(ws) for ws in sockets))


# -- one setup ------------------------------------------------------------------------------------


@dataclass
class IdleRun:
    setup: str  # "direct" or "gateway"
    connections: int  # asked for
    opened: int  # opened and echoed
    answering: int  # of those, still echoing after the idle window
    failures: list[str]
    open_seconds: float  # to open them all
    seconds: float  # the measured idle window
    rss_before: dict[str, int | None]
    rss_after: dict[str, int | None]
    cpu: dict[str, float | None]  # CPU seconds over the idle window, per process
    redis: RedisCounters | None = None  # over the idle window

    def memory_per_connection(self, role: str) -> float | None:
        """Bytes of RSS each open connection added to the process."""
        before, after = self.rss_before.get(role), self.rss_after.get(role)
        if before is None or after is None or not self.opened:
            return None
        return (after - before) / self.opened

    def core_share(self, role: str) -> float | None:
        """CPU while idle, as a share of one core."""
        seconds = self.cpu.get(role)
        return None if seconds is None or not self.seconds else seconds / self.seconds

    def commands_per_second(self, *, presence: bool = True) -> float | None:
        if self.redis is None or not self.seconds:
            return None
        counted = {
            name: calls
            for name, calls in self.redis.commands.items()
            if presence or name not in PRESENCE_COMMANDS
        }
        return sum(counted.values()) / self.seconds

    def by_command(self) -> list[tuple[str, float]]:
        if self.redis is None or not self.seconds:
            return []
        calls = sorted(self.redis.commands.items(), key=lambda item: -item[1])
        return [(name, count / self.seconds) for name, count in calls if count > 0]


async def _measure(setup: bench_http.Setup, name: str, sizes: IdleSizes) -> IdleRun:
    url = f"ws://127.0.0.1:{setup.port}/idle"
    # Warm up the WebSocket path (imports, first connections) before the memory baseline.
    warm = await open_many(url, min(5, sizes.connections), sizes)
    await close_all(warm.sockets, sizes)
    await asyncio.sleep(0.5)
    rss_before = {role: rss_bytes(pid) for role, pid in setup.pids.items()}
    started = time.perf_counter()
    opened = await open_many(url, sizes.connections, sizes)
    open_seconds = time.perf_counter() - started
    try:
        await asyncio.sleep(sizes.settle)
        rss_after = {role: rss_bytes(pid) for role, pid in setup.pids.items()}
        with measured(setup.pids, setup.redis_url) as window:
            await asyncio.sleep(sizes.idle)
        answering = await still_answering(opened.sockets, sizes)
    finally:
        await close_all(opened.sockets, sizes)
    return IdleRun(
        setup=name,
        connections=sizes.connections,
        opened=len(opened.sockets),
        answering=answering,
        failures=opened.failures,
        open_seconds=open_seconds,
        seconds=window.seconds,
        rss_before=rss_before,
        rss_after=rss_after,
        cpu=window.cpu,
        redis=window.redis,
    )


@contextlib.contextmanager
def _server(name: str, sizes: IdleSizes) -> Iterator[bench_http.Setup]:
    if name == "direct":
        with bench_http.direct_server() as setup:
            yield setup
    else:
        # The Node must be allowed to run every connection at once (its default is 1,000).
        concurrency = ["--concurrency", str(max(1_000, sizes.connections + 100))]
        with bench_http.gateway_server(worker_extra=concurrency) as setup:
            yield setup


def _run_loop(coroutine: Any, loop: str) -> Any:
    if loop == "uvloop":
        return importlib.import_module("uvloop").run(coroutine)
    return asyncio.run(coroutine)


def measure_setup(name: str, sizes: IdleSizes, loop: str = "asyncio") -> IdleRun:
    with _server(name, sizes) as setup:
        result: IdleRun = _run_loop(_measure(setup, name, sizes), loop)
    return result


@dataclass
class IdleOutcome:
    direct: IdleRun
    gateway: IdleRun

    def verdicts(self) -> list[tuple[str, bool]]:
        gateway = self.gateway
        out: list[tuple[str, bool]] = []
        rate = gateway.commands_per_second(presence=False)
        presence = (gateway.commands_per_second() or 0.0) - (rate or 0.0)
        out.append(
            (
                f"Redis commands/s while idle <= {TARGET_COMMANDS_PER_SECOND:.0f} (presence"
                f" writes aside: {presence:.1f}/s): "
                + ("not measured" if rate is None else f"{rate:,.1f}"),
                rate is not None and rate <= TARGET_COMMANDS_PER_SECOND,
            )
        )
        for role, label in (("edge", "edge"), ("worker", "Node")):
            share = gateway.core_share(role)
            out.append(
                (
                    f"{label} CPU while idle < {TARGET_CORE_SHARE:.0%} of a core: "
                    + ("not measured" if share is None else f"{share:.1%}"),
                    share is not None and share < TARGET_CORE_SHARE,
                )
            )
        for run in (self.direct, gateway):
            out.append(
                (
                    f"{run.setup}: every connection opened and still answering after the idle"
                    f" window: {run.answering} of {run.connections}",
                    run.answering == run.connections,
                )
            )
        return out


def run(sizes: IdleSizes, loop: str = "asyncio") -> IdleOutcome:
    # Each connection is a socket in this process and one in the edge (or uvicorn).
    limit = raise_fd_limit(sizes.connections * 2 + 1_024)
    if limit < sizes.connections + 256:
        raise RuntimeError(
            f"open-file limit {limit} is too low for {sizes.connections} WebSockets;"
            f" raise it (ulimit -n {sizes.connections * 2 + 1_024})"
        )
    runs = {}
    for name in ("direct", "gateway"):
        runs[name] = measure_setup(name, sizes, loop)
        print(f"  {name:8s} {_run_line(runs[name])}", flush=True)
    return IdleOutcome(direct=runs["direct"], gateway=runs["gateway"])


def _run_line(run: IdleRun) -> str:
    roles = ("uvicorn",) if run.setup == "direct" else ("edge", "worker", "redis")
    cpu = ", ".join(f"{role} {_share(run.core_share(role))}" for role in roles)
    memory = ", ".join(f"{role} {_kib(run.memory_per_connection(role))}" for role in roles)
    line = (
        f"{run.opened}/{run.connections} open in {run.open_seconds:.1f} s, idle {run.seconds:.0f}"
        f" s: CPU {cpu}; memory per connection {memory}"
    )
    if run.redis is not None:
        line += f"; Redis {run.commands_per_second():,.1f} commands/s"
    if run.failures:
        line += f"; {len(run.failures)} failed, first: {run.failures[0]}"
    return line


# -- the tables -----------------------------------------------------------------------------------


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:,.1f} KiB"


HEADER = ["figure (while idle)", "direct uvicorn", "edge", "Node", "Redis", "target", "result"]
ALIGN = "lrrrrll"


def table_rows(outcome: IdleOutcome) -> list[list[str]]:
    direct, gateway = outcome.direct, outcome.gateway
    verdicts = [ok for _, ok in outcome.verdicts()]

    def mark(ok: bool) -> str:
        return "PASS" if ok else "MISSED"

    rate = gateway.commands_per_second(presence=False)
    every = gateway.commands_per_second()
    return [
        [
            "connections open (still answering after)",
            f"{direct.opened} ({direct.answering})",
            f"{gateway.opened} ({gateway.answering})",
            "",
            "",
            f"{direct.connections} each",
            mark(verdicts[3] and verdicts[4]),
        ],
        [
            "CPU, share of one core",
            _share(direct.core_share("uvicorn")),
            _share(gateway.core_share("edge")),
            _share(gateway.core_share("worker")),
            _share(gateway.core_share("redis")),
            f"edge, Node < {TARGET_CORE_SHARE:.0%}",
            mark(verdicts[1] and verdicts[2]),
        ],
        [
            "memory per connection (RSS growth / connections)",
            _kib(direct.memory_per_connection("uvicorn")),
            _kib(gateway.memory_per_connection("edge")),
            _kib(gateway.memory_per_connection("worker")),
            _kib(gateway.memory_per_connection("redis")),
            "reported",
            "",
        ],
        [
            "Redis commands per second (presence writes aside)",
            "-",
            "",
            "",
            "-" if every is None else f"{every:,.1f} ({rate:,.1f})",
            f"<= {TARGET_COMMANDS_PER_SECOND:.0f} aside presence",
            mark(verdicts[0]),
        ],
    ]


def commands_text(run: IdleRun) -> str:
    calls = run.by_command()
    return ", ".join(f"{name.upper()} {rate:,.2f}" for name, rate in calls) or "none"


def chart_panels(outcome: IdleOutcome) -> list[chart.Panel]:
    direct, gateway = outcome.direct, outcome.gateway

    def percent(value: float | None) -> float | None:
        return None if value is None else value * 100

    def kib(value: float | None) -> float | None:
        return None if value is None else value / 1024

    return [
        chart.Panel(
            "CPU while idle",
            "% of a core",
            {
                "direct": percent(direct.core_share("uvicorn")),
                "edge": percent(gateway.core_share("edge")),
                "Node": percent(gateway.core_share("worker")),
            },
            False,
        ),
        chart.Panel(
            "memory per connection",
            "KiB",
            {
                "direct": kib(direct.memory_per_connection("uvicorn")),
                "edge": kib(gateway.memory_per_connection("edge")),
                "Node": kib(gateway.memory_per_connection("worker")),
            },
            False,
        ),
        chart.Panel(
            "Redis commands while idle",
            "per second",
            {"Redis": gateway.commands_per_second()},
            False,
        ),
    ]


def markdown(outcome: IdleOutcome, sizes: IdleSizes, load: str, image: str | None = None) -> str:
    facts = machine_facts()
    versions = ", ".join(
        f"{name} {package_version(name)}" for name in ("uvicorn", "uvloop", "websockets", "redis")
    )
    bullets = [
        f"Machine: `{facts['arch']}`, {facts['cpu']}, {facts['cores']} cores, {facts['system']};"
        f" load average: {load}",
        f"{facts['python']}, {versions}; distributed_asgi at {git_revision()}",
        f"{sizes.connections:,} WebSockets to the same app (`bench/http.py`, which echoes), held"
        " by one asyncio client process (the `websockets` library, no client pings, no"
        " compression): (a) **direct** to uvicorn, (b) through the **gateway**: one edge, one"
        " Node (`distributed-asgi worker --concurrency"
        f" {max(1_000, sizes.connections + 100)}`), a private Redis; uvicorn settings as in the"
        " HTTP section, its own WebSocket pings left at their default for both",
        f"Each connection is opened ({sizes.opening} handshakes at a time) and checked by an echo;"
        f" after {sizes.settle:.0f} s the **idle window** of {sizes.idle:.0f} s is measured: CPU"
        " from `/proc/PID/stat`, Redis's `INFO commandstats` after `CONFIG RESETSTAT`; then"
        " every connection is checked by an echo again",
        "Memory per connection: RSS after the last connection opened minus RSS before the first,"
        " divided by the connections; presence writes are the Nodes' `SET` of their presence key",
    ]
    verdicts = [f"- {'PASS' if ok else 'MISSED'}: {text}" for text, ok in outcome.verdicts()]
    return "\n".join(
        [
            "## Idle WebSockets: direct uvicorn vs. through the gateway",
            "",
            f"Recorded {facts['date']} by `make bench` (`python -m bench idle`).",
            "",
            *(f"- {bullet}" for bullet in bullets),
            "",
            *([image, ""] if image else []),
            markdown_table(HEADER, table_rows(outcome), ALIGN),
            "",
            f"Redis commands per second while idle, by command: {commands_text(outcome.gateway)}.",
            "",
            *verdicts,
        ]
    )


def main(sizes: IdleSizes = FULL, *, loop: str = "asyncio", write: bool = True) -> bool:
    """Hold the connections through both setups, print the table, record it; True if all pass."""
    load_before = load_average()
    print(
        f"idle: {sizes.connections:,} idle WebSockets for {sizes.idle:.0f} s, direct uvicorn vs."
        " gateway (one edge, one Node)",
        flush=True,
    )
    outcome = run(sizes, loop)
    load = f"{load_before} before, {load_average()} after"
    print()
    print(plain_table(HEADER, table_rows(outcome), ALIGN))
    print()
    print(f"Redis commands per second while idle: {commands_text(outcome.gateway)}")
    for run_ in (outcome.direct, outcome.gateway):
        for failure in run_.failures[:3]:
            print(f"   note: {run_.setup}: {failure}")
    print(f"   load average: {load}")
    for text, ok in outcome.verdicts():
        print(f"{'PASS  ' if ok else 'MISSED'}  {text}")
    image = chart.record(
        SECTION,
        f"{sizes.connections:,} idle WebSockets for {sizes.idle:.0f} s: direct uvicorn vs. the"
        " gateway",
        chart_panels(outcome),
        write=write,
        alt="Idle WebSockets: CPU while idle and memory per connection of direct uvicorn, the"
        " edge and the Node, and Redis commands per second",
        note=f"{machine_facts()['date']}, {os.cpu_count()} cores",
    )
    if write:
        replace_section(SECTION, markdown(outcome, sizes, load, image))
        print(f"(written to docs/benchmarks.md, section {SECTION})")
    print(flush=True)
    return all(ok for _, ok in outcome.verdicts())


if __name__ == "__main__":
    sys.exit(0 if main(QUICK if "--quick" in sys.argv else FULL) else 1)
