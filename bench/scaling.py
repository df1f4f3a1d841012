"""``python -m bench scaling``: what one gateway request costs Redis, and one host vs three.

Rules of this file:

- Every setup is real: private ``RedisProcess`` servers on loopback, and for the gateway the
  edge and the worker started as users start them (``python -m distributed_asgi edge|worker``,
  ``--redis`` once per server), serving ``bench/http.py``'s hello world.
- Redis's own counters are the measure of Redis: ``CONFIG RESETSTAT`` after the warm-up, then
  ``INFO commandstats`` (calls per command), ``INFO stats`` (``total_net_input_bytes`` /
  ``total_net_output_bytes``) and ``INFO cpu`` (``used_cpu_sys`` + ``used_cpu_user``) around
  the measured run, divided by the requests answered in it. The edge's and the worker's CPU
  come from ``/proc/PID/stat``, the load generator's from ``getrusage``.
- Four setups, measured in rotation (the order alternates every round) and the median counts:
  the layer's ``throughput`` case (``bench/cases.py``) on one host and on three, and the
  gateway (one edge, one worker) on one host and on three.
- What cannot be measured on this machine is projected, and every projection says so: one
  Redis core's ceiling is 1 s of CPU divided by Redis's CPU per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from distributed_asgi.ops.redis_process import RedisProcess, free_port

from . import chart
from . import http as bench_http
from .cases import CASES, Sizes
from .cases import FULL as LAYER_FULL
from .counters import RedisCounters, RedisStats, process_cpu
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

__all__ = ["FULL", "QUICK", "Outcome", "ScalingSizes", "main", "run"]

SECTION = "scaling-bench"
SCALING_MD = ROOT / "docs" / "scaling.md"
PREFIX = "bench-scaling"
SHARDS = 3


@dataclass(frozen=True)
class ScalingSizes:
    connections: int  # gateway: keep-alive connections of the load generator
    duration: float  # gateway: seconds of load per measured run
    warmup: float  # gateway: seconds of load before the counters are reset
    runs: int  # rounds of the four setups, in rotation; the median run counts
    layer: Sizes = field(default=LAYER_FULL)  # the layer throughput case's sizes
    # The layer case is short (about a second), so one noisy moment moves a run a lot: measure
    # it this many times per round (1 host, 3 hosts, 1 host, ...), still in rotation.
    layer_repeats: int = 1


FULL = ScalingSizes(connections=32, duration=10.0, warmup=2.0, runs=3, layer_repeats=3)
QUICK = ScalingSizes(
    connections=8, duration=2.0, warmup=0.5, runs=1, layer=replace(LAYER_FULL, messages=2_000)
)


def _own_and_children_cpu() -> float:
    """The load generator's CPU: this process (the Python generator) plus reaped children (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- the gateway --------------------------------------------------------------------------------


@dataclass
class GatewayRun:
    hosts: int
    load: bench_http.Load
    wall: float  # seconds the measured load ran
    redis: list[RedisCounters]  # per server, over the measured run
    edge_cpu: float | None
    worker_cpu: float | None
    generator_cpu: float

    @property
    def answered(self) -> int:
        return max(1, self.load.requests)

    @property
    def total(self) -> RedisCounters:
        total = self.redis[0]
        for counters in self.redis[1:]:
            total = total + counters
        return total

    def per_request(self, value: float) -> float:
        return value / self.answered

    def utilisation(self, cpu: float | None) -> float | None:
        return None if cpu is None or not self.wall else cpu / self.wall

    def cores_used(self) -> float:
        """Cores the edge, the worker, Redis and the load generator kept busy together."""
        cpus = [self.edge_cpu, self.worker_cpu, self.total.cpu, self.generator_cpu]
        return sum(cpu or 0.0 for cpu in cpus) / self.wall if self.wall else 0.0


def route_keys(urls: list[str]) -> list[str]:
    """``SHARDS`` route keys, one placed on each server by the layer's hash ring when there are
    that many servers (any ``SHARDS`` keys on one server), so the route channels' traffic spreads
    over the shards as a deployment with several routes would. The processes' inboxes are
    placed by their random names, wherever the ring puts them."""
    from distributed_asgi.layers import RedisChannelLayer

    ring = RedisChannelLayer(hosts=urls, prefix=PREFIX).ring
    keys: dict[int, str] = {}
    for n in range(10_000):
        if len(keys) == SHARDS:
            break
        shard = ring.shard_for(f"hello{n}") if len(urls) > 1 else n
        keys.setdefault(shard, f"hello{n}")
    return [keys[shard] for shard in sorted(keys)]


@contextlib.contextmanager
def gateway(urls: list[str], keys: list[str]) -> Iterator[tuple[int, int, int]]:
    """One edge and one worker over ``urls``, serving ``/KEY`` for each key; yields (port, edge
    pid, worker pid)."""
    port = free_port()
    cli = [sys.executable, "-m", "distributed_asgi"]
    layer = [arg for url in urls for arg in ("--redis", url)] + ["--prefix", PREFIX]
    app = [bench_http.APP, *(arg for key in keys for arg in ("--key", key))]
    loop = ["--loop", bench_http.event_loop()]
    node = bench_http._start([*cli, "worker", *app, *layer, *loop, "--log-level", "warning"])
    # The measured paths match the first route; "/" (the start-up check's path) the second.
    routes = ["--route", r"^/(hello[0-9]+)$=\1", "--route", f"^/$={keys[0]}"]
    edge_args = [*cli, "edge", *routes, "--host", "127.0.0.1", "--port", str(port)]
    edge = bench_http._start([*edge_args, *layer, *bench_http._uvicorn_settings()])
    try:
        bench_http._wait_until_correct(port, [node, edge])
        yield port, edge.pid, node.pid
    finally:
        bench_http._stop([edge, node])


def _http_sizes(sizes: ScalingSizes) -> bench_http.HttpSizes:
    return bench_http.HttpSizes(
        connections=sizes.connections, duration=sizes.duration, warmup=sizes.warmup, runs=1
    )


def measure_gateway(hosts: int, sizes: ScalingSizes, loop: str) -> GatewayRun:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(RedisProcess()) for _ in range(hosts)]
        urls = [server.url for server in servers]
        keys = route_keys(urls)
        paths = [f"/{key}" for key in keys]
        with gateway(urls, keys) as (port, edge_pid, worker_pid):
            http_sizes = _http_sizes(sizes)
            bench_http.measure(port, http_sizes, loop, duration=sizes.warmup, paths=paths)
            stats = [stack.enter_context(RedisStats(url)) for url in urls]
            for server_stats in stats:
                server_stats.reset()
            before = [server_stats.read() for server_stats in stats]
            edge_before, worker_before = process_cpu(edge_pid), process_cpu(worker_pid)
            generator_before = _own_and_children_cpu()
            started = time.perf_counter()
            load = bench_http.measure(port, http_sizes, loop, paths=paths)
            wall = time.perf_counter() - started
            generator_cpu = _own_and_children_cpu() - generator_before
            edge_after, worker_after = process_cpu(edge_pid), process_cpu(worker_pid)
            after = [server_stats.read() for server_stats in stats]
    return GatewayRun(
        hosts=hosts,
        load=load,
        wall=wall,
        redis=[a - b for a, b in zip(after, before, strict=True)],
        edge_cpu=None if edge_before is None or edge_after is None else edge_after - edge_before,
        worker_cpu=(
            None if worker_before is None or worker_after is None else worker_after - worker_before
        ),
        generator_cpu=generator_cpu,
    )


# -- the layer throughput case, on one host or several --------------------------------------------


class HostsKit:
    """``bench.cases``' LayerKit for our layer over a list of hosts."""

    def __init__(self, hosts: list[str], prefix: str) -> None:
        self.hosts, self.prefix = hosts, prefix
        self.made: list[Any] = []

    def new(self) -> Any:
        from distributed_asgi.layers import RedisChannelLayer

        layer = RedisChannelLayer(hosts=self.hosts, prefix=self.prefix, capacity=100_000)
        self.made.append(layer)
        return layer

    async def close_all(self) -> None:
        for layer in self.made:
            await layer.close()
        self.made.clear()


async def _throughput(hosts: list[str], sizes: Sizes) -> dict[str, float]:
    kit = HostsKit(hosts, PREFIX)
    try:
        return await CASES["throughput"](kit, sizes)
    finally:
        await kit.close_all()


def measure_layer(hosts: int, sizes: ScalingSizes, loop: str) -> dict[str, float]:
    """The throughput case in a fresh interpreter (``python -m bench.scaling SPEC``)."""
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(RedisProcess()).url for _ in range(hosts)]
        spec = {"hosts": urls, "sizes": asdict(sizes.layer), "loop": loop}
        done = subprocess.run(
            [sys.executable, "-m", "bench.scaling", json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=sizes.layer.timeout * 10,
        )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, float] = json.loads(line[len("RESULT ") :])
            return result
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    raise RuntimeError(f"layer throughput on {hosts} host(s): exited {done.returncode}\n{tail}")


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    gateway: dict[int, list[GatewayRun]]  # hosts -> runs
    layer: dict[int, list[dict[str, float]]]  # hosts -> runs

    def gateway_median(self, hosts: int) -> GatewayRun:
        runs = sorted(self.gateway[hosts], key=lambda run: run.load.rps)
        return runs[len(runs) // 2]

    def layer_rates(self, hosts: int) -> list[float]:
        return [result["rate"] for result in self.layer[hosts]]

    def layer_median(self, hosts: int) -> float:
        return statistics.median(self.layer_rates(hosts))

    @property
    def errors(self) -> int:
        return sum(run.load.errors for runs in self.gateway.values() for run in runs) + int(
            sum(result["lost"] for runs in self.layer.values() for result in runs)
        )


def run(sizes: ScalingSizes, loop: str = "asyncio") -> Outcome:
    outcome = Outcome(gateway={1: [], SHARDS: []}, layer={1: [], SHARDS: []})
    for round_number in range(sizes.runs):
        # Alternate every round which of 1 and 3 hosts goes first, and whether the layer or the
        # gateway does, so neither side always runs first or right after the other's servers.
        even = round_number % 2 == 0
        first, second = (1, SHARDS) if even else (SHARDS, 1)
        layer_block = [("layer", first), ("layer", second)] * sizes.layer_repeats
        gateway_block = [("gateway", first), ("gateway", second)]
        for kind, hosts in layer_block + gateway_block if even else gateway_block + layer_block:
            label = f"  {kind:7s} {hosts} host(s) run {round_number + 1}/{sizes.runs}:"
            if kind == "layer":
                result = measure_layer(hosts, sizes, loop)
                outcome.layer[hosts].append(result)
                print(f"{label} {result['rate']:9.0f} msg/s  lost {result['lost']:.0f}", flush=True)
            else:
                gateway_run = measure_gateway(hosts, sizes, loop)
                outcome.gateway[hosts].append(gateway_run)
                total = gateway_run.total
                print(
                    f"{label} {gateway_run.load.rps:9.0f} req/s  "
                    f"p99 {gateway_run.load.p99_ms:6.2f} ms  "
                    f"Redis {gateway_run.per_request(sum(total.commands.values())):.1f} cmd/req "
                    f"{gateway_run.per_request(total.cpu) * 1e6:.0f} µs/req  "
                    f"errors {gateway_run.load.errors}"
                    + (f"  commands per server {spread_text(gateway_run)}" if hosts > 1 else ""),
                    flush=True,
                )
    return outcome


# -- the tables -----------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}% of a core"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e6:.0f} µs"


def cost_rows(one: GatewayRun) -> list[list[str]]:
    """Per request, one edge + one worker + one Redis, at the load generator's concurrency."""
    total = one.total
    commands = sum(total.commands.values())
    scripts = total.commands.get("evalsha", 0) + total.commands.get("eval", 0)
    edge = None if one.edge_cpu is None else one.per_request(one.edge_cpu)
    worker = None if one.worker_cpu is None else one.per_request(one.worker_cpu)
    return [
        ["requests/s through the gateway (measured)", f"{one.load.rps:,.0f}"],
        [
            "Redis commands per request (all, as Redis counts them)",
            f"{one.per_request(commands):.2f}",
        ],
        ["... of which script calls (EVALSHA)", f"{one.per_request(scripts):.2f}"],
        ["bytes into Redis per request", f"{one.per_request(total.net_in):,.0f}"],
        ["bytes out of Redis per request", f"{one.per_request(total.net_out):,.0f}"],
        ["Redis CPU per request", _us(one.per_request(total.cpu))],
        ["Redis CPU at that rate", _percent(one.utilisation(total.cpu))],
        [
            "edge CPU per request / at that rate",
            f"{_us(edge)} / {_percent(one.utilisation(one.edge_cpu))}",
        ],
        [
            "worker CPU per request / at that rate",
            f"{_us(worker)} / {_percent(one.utilisation(one.worker_cpu))}",
        ],
        ["load generator CPU at that rate", _percent(one.utilisation(one.generator_cpu))],
        ["all four processes at that rate", f"{one.cores_used():.2f} of {os.cpu_count()} cores"],
    ]


def command_rows(one: GatewayRun) -> list[list[str]]:
    total = one.total
    ordered = sorted(total.commands.items(), key=lambda item: -item[1])
    return [[name.upper(), f"{one.per_request(calls):.3f}"] for name, calls in ordered if calls]


@dataclass
class Projection:
    shard_ceiling: float  # req/s one Redis core would carry
    edge_rate: float | None  # req/s one edge process would carry on one core
    worker_rate: float | None  # req/s one worker process would carry on one core


def projection(one: GatewayRun) -> Projection:
    redis_cpu = one.per_request(one.total.cpu)

    def per_core(cpu: float | None) -> float | None:
        return None if not cpu else 1 / one.per_request(cpu)

    return Projection(
        shard_ceiling=1 / redis_cpu if redis_cpu > 0 else float("inf"),
        edge_rate=per_core(one.edge_cpu),
        worker_rate=per_core(one.worker_cpu),
    )


def projection_rows(p: Projection, ks: tuple[int, ...] = (1, 3, 10)) -> list[list[str]]:
    rows = []
    for k in ks:
        rate = k * p.shard_ceiling
        edges = "-" if not p.edge_rate else f"{rate / p.edge_rate:,.0f}"
        workers = "-" if not p.worker_rate else f"{rate / p.worker_rate:,.0f}"
        rows.append([str(k), f"{rate:,.0f}", edges, workers])
    return rows


PROJECTION_HEADER = ["shards k", "req/s (projection)", "edge cores needed", "worker cores needed"]


def comparison_rows(outcome: Outcome) -> list[list[str]]:
    one, three = outcome.gateway_median(1), outcome.gateway_median(SHARDS)
    layer_one, layer_three = outcome.layer_median(1), outcome.layer_median(SHARDS)

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}" if a else "-"

    one_cpu, three_cpu = one.per_request(one.total.cpu), three.per_request(three.total.cpu)
    return [
        [
            "layer throughput (msg/s)",
            f"{layer_one:,.0f}",
            f"{layer_three:,.0f}",
            ratio(layer_one, layer_three),
        ],
        [
            "gateway req/s",
            f"{one.load.rps:,.0f}",
            f"{three.load.rps:,.0f}",
            ratio(one.load.rps, three.load.rps),
        ],
        [
            "gateway p50 ms",
            f"{one.load.p50_ms:.2f}",
            f"{three.load.p50_ms:.2f}",
            ratio(one.load.p50_ms, three.load.p50_ms),
        ],
        [
            "gateway p99 ms",
            f"{one.load.p99_ms:.2f}",
            f"{three.load.p99_ms:.2f}",
            ratio(one.load.p99_ms, three.load.p99_ms),
        ],
        [
            "Redis CPU per request (all servers)",
            _us(one_cpu),
            _us(three_cpu),
            ratio(one_cpu, three_cpu),
        ],
    ]


COMPARISON_HEADER = ["figure", "1 host", f"{SHARDS} hosts", f"{SHARDS} / 1"]


def spread_factor(values: list[float]) -> float:
    """Fastest run / slowest run of one setup: how far apart runs of the same thing land."""
    return max(values) / min(values) if values and min(values) > 0 else float("inf")


def _noise_note(ratio: float, spread_one: float, spread_three: float) -> str:
    spread = max(spread_one, spread_three)
    if 0.9 <= ratio <= 1.1:
        return f"Within 10% of 1, as expected (runs of one setup differ up to {spread:.1f}x)."
    if max(ratio, 1 / ratio) <= spread:
        return (
            f"That is further from 1 than expected, but runs of one setup differed up to"
            f" {spread:.1f}x on this shared machine (every run above): read it as noise, not as"
            " an effect of the shards."
        )
    return (
        f"That is further from 1 than the runs of one setup differ ({spread:.1f}x at most): an"
        " effect this benchmark does not explain, to look into on a quiet machine."
    )


def _gateway_note(ratio: float, cpu_ratio: float, spread: float) -> str:
    # On a machine where Redis is not the bottleneck, a loss is what three servers predict
    # (more Redis CPU, more processes on the same cores); a gain is not.
    if ratio < 0.9:
        return (
            f"A loss is what that predicts (Redis CPU per request {cpu_ratio:.2f}x, two more"
            f" processes); runs of one setup differed up to {spread:.1f}x, so its size is"
            " uncertain (every run above)."
        )
    if ratio <= 1.1:
        return f"About the same (runs of one setup differed up to {spread:.1f}x)."
    if ratio <= spread:
        return (
            f"A gain here is not what that predicts; runs of one setup differed up to"
            f" {spread:.1f}x on this shared machine (every run above): read it as noise."
        )
    return (
        f"A gain beyond the spread of the runs ({spread:.1f}x at most), which Redis's idle CPU"
        " does not explain: an effect to look into on a quiet machine."
    )


def comparison_cpu_ratio(outcome: Outcome) -> float:
    one, three = outcome.gateway_median(1), outcome.gateway_median(SHARDS)
    before = one.per_request(one.total.cpu)
    return three.per_request(three.total.cpu) / before if before else 0.0


def every_run_rows(outcome: Outcome) -> list[list[str]]:
    """Every run's figure in run order, to show the spread behind each median."""

    def runs(values: list[str]) -> str:
        return " / ".join(values) or "-"

    return [
        [
            "layer throughput (msg/s)",
            *(runs([f"{r['rate']:,.0f}" for r in outcome.layer[h]]) for h in (1, SHARDS)),
        ],
        [
            "gateway req/s",
            *(runs([f"{r.load.rps:,.0f}" for r in outcome.gateway[h]]) for h in (1, SHARDS)),
        ],
        [
            f"commands per server ({SHARDS} hosts)",
            "-",
            "; ".join(spread_text(r) for r in outcome.gateway[SHARDS]) or "-",
        ],
    ]


def spread_text(three: GatewayRun) -> str:
    """How the three servers shared the gateway's commands."""
    counts = [sum(counters.commands.values()) for counters in three.redis]
    total = sum(counts) or 1
    return " / ".join(f"{count / total:.0%}" for count in counts)


def _server_version() -> str:
    import redis

    with RedisProcess() as server:
        client = redis.Redis.from_url(server.url)
        try:
            info = client.info("server")
        finally:
            client.close()
    version = info.get("valkey_version") or info.get("redis_version", "?")
    return f"{info.get('server_name') or 'redis'} {version}"


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(
    outcome: Outcome,
    sizes: ScalingSizes,
    loop: str,
    load: str,
    server: str,
    image: str | None = None,
) -> str:
    facts = machine_facts()
    one, three = outcome.gateway_median(1), outcome.gateway_median(SHARDS)
    p = projection(one)
    generator = bench_http.load_generator()
    gen_text = "wrk, 1 thread" if generator == "wrk" else f"the bundled asyncio generator ({loop})"
    versions = ", ".join(
        f"{name} {package_version(name)}" for name in ("uvicorn", "uvloop", "redis")
    )
    ratio = three.load.rps / one.load.rps if one.load.rps else 0.0
    layer_ratio = outcome.layer_median(SHARDS) / outcome.layer_median(1)
    lines = [
        "## Scaling: Redis cost per request, one host vs three",
        "",
        f"Recorded {facts['date']} by `make bench` (`python -m bench scaling`).",
        "",
        f"- Machine: `{facts['arch']}`, {facts['cpu']}, {facts['cores']} cores, {facts['system']};"
        f" load average (1, 5, 15 min): {load}",
        f"- {facts['python']}, {versions}; server {server}; distributed_asgi at {git_revision()}",
        "- Gateway: `bench/http.py`'s hello world behind one edge (`distributed-asgi edge`, uvicorn"
        " `--loop auto --http auto`) and one worker (`distributed-asgi worker`), each started with"
        f" one `--redis` per private server on loopback; load: {gen_text}, {sizes.connections}"
        f" keep-alive connections for {sizes.duration:.0f} s after a {sizes.warmup:.0f} s warm-up",
        "- Redis figures are Redis's own counters over the measured run (`CONFIG RESETSTAT` after"
        " the warm-up; `INFO commandstats`, `total_net_input_bytes`/`total_net_output_bytes`,"
        " `used_cpu_sys + used_cpu_user`), divided by the requests answered; edge and worker CPU"
        " from `/proc/PID/stat`",
        f"- {sizes.runs} round(s) in rotation (each gateway setup once per round, each layer"
        f" setup {sizes.layer_repeats} time(s)); the median of each is shown;"
        f" errors or lost messages in any run: {outcome.errors}",
        "",
        *([image, ""] if image else []),
        "### Per request, one edge, one worker, one Redis (measured)",
        "",
        markdown_table(["figure", "value"], cost_rows(one), "lr"),
        "",
        "Commands per request, by command (script calls count once as `EVALSHA`, and the calls"
        " the script makes count again under their own names):",
        "",
        markdown_table(["command", "per request"], command_rows(one), "lr"),
        "",
        "### What bounds one shard on this machine",
        "",
        f"The gateway ran at **{one.load.rps:,.0f} req/s** with Redis at"
        f" **{_percent(one.utilisation(one.total.cpu))}**, the edge at"
        f" {_percent(one.utilisation(one.edge_cpu))} and the worker at"
        f" {_percent(one.utilisation(one.worker_cpu))}; with the load generator the four kept"
        f" {one.cores_used():.2f} of the machine's {os.cpu_count()} cores busy; the machine is"
        " shared, and other tenants had the rest (load average above). Redis is not what bounds"
        " the rate: the edge and the worker (one Python event loop each, so one core at most)"
        " each spend several times Redis's CPU on a request, and they get only what the other"
        " processes leave of 2 cores. What one shard *sustains* cannot be measured on this"
        " machine; it is **projected**:",
        "",
        f"- **one shard (projection): 1 core / {_us(one.per_request(one.total.cpu))} of Redis CPU"
        f" per request ≈ {p.shard_ceiling:,.0f} req/s**, if enough edges and workers feed it"
        f" (one edge process carries about {_fmt_rate(p.edge_rate)} req/s per core, one worker"
        f" about {_fmt_rate(p.worker_rate)}, from their measured CPU per request). Redis's CPU per"
        " request falls as load rises (more messages per pipeline and per blocking-pop round),"
        " so this is a floor on what one core does, for this request shape (a small GET, no body).",
        f"- **k shards (projection): k x {p.shard_ceiling:,.0f} req/s**, linear only while the"
        " traffic spreads over the shards: a route channel lives on one shard, so it needs several"
        " route keys (or many edges and Nodes, whose inboxes spread) to use k shards; and only"
        " with k times the edges and Nodes:",
        "",
        markdown_table(PROJECTION_HEADER, projection_rows(p), "rrrr"),
        "",
        "### One host vs three, measured side by side",
        "",
        markdown_table(COMPARISON_HEADER, comparison_rows(outcome), "lrrr"),
        "",
        "Every run, in order (the four setups rotate):",
        "",
        markdown_table(["figure", "1 host", f"{SHARDS} hosts"], every_run_rows(outcome), "lrr"),
        "",
        f"- **Layer** (`throughput` case of `bench/cases.py`: one producer, one consumer, one"
        f" `new_channel()` channel, {sizes.layer.messages:,} messages, measured"
        f" {sizes.runs * sizes.layer_repeats} times per setup): {layer_ratio:.2f}x. One channel"
        " lives on one host, so with three hosts its messages take exactly the same path and"
        " nothing is spread; the ratio can only show what sharding costs one channel (the ring"
        " lookup: nothing measurable) or the machine's noise. "
        + _noise_note(layer_ratio, *(spread_factor(outcome.layer_rates(h)) for h in (1, SHARDS))),
        f"- **Gateway**: {ratio:.2f}x with three hosts. The three route keys are on one server"
        " each; the edge's inbox (the replies, and the edge's blocking-pop rounds: most of the"
        " traffic of a GET) is where its random name puts it, so one server carries most of the"
        f" commands ({spread_text(three)} in the median run). Redis used"
        f" {_percent(one.utilisation(one.total.cpu))} with one host, so more servers cannot raise"
        " the rate on this machine; they add two processes to the same 2 cores, and each server"
        " gets a share of the pipelining, so Redis spent"
        f" {comparison_cpu_ratio(outcome):.2f}x the CPU per request in all (more reads, writes and"
        " wake-ups for the same commands). "
        + _gateway_note(
            ratio,
            comparison_cpu_ratio(outcome),
            max(spread_factor([r.load.rps for r in outcome.gateway[h]]) for h in (1, SHARDS)),
        )
        + " The gain from shards is where one Redis core is the limit (the projection above).",
    ]
    return "\n".join(lines)


def scaling_md_summary(outcome: Outcome, load: str = "unknown") -> str:
    """The short version docs/scaling.md quotes; the full section is in docs/benchmarks.md."""
    facts = machine_facts()
    one, three = outcome.gateway_median(1), outcome.gateway_median(SHARDS)
    p = projection(one)
    total = one.total
    commands = sum(total.commands.values())
    scripts = total.commands.get("evalsha", 0) + total.commands.get("eval", 0)
    rows = [
        [
            "Redis commands per HTTP request (small GET, through edge and Node)",
            f"{one.per_request(commands):.1f}"
            f" (of which {one.per_request(scripts):.1f} script calls)",
        ],
        [
            "bytes to / from Redis per HTTP request (small GET)",
            f"{one.per_request(total.net_in):,.0f} / {one.per_request(total.net_out):,.0f}",
        ],
        ["Redis CPU per HTTP request", _us(one.per_request(total.cpu))],
        [
            "req/s through one edge + one worker on this 2-core machine (measured)",
            f"{one.load.rps:,.0f}, Redis at {_percent(one.utilisation(total.cpu))}",
        ],
        [
            "req/s one shard (one Redis core) sustains",
            f"≈ {p.shard_ceiling:,.0f} (**projection**: 1 core / Redis CPU per request)",
        ],
        [
            "k shards",
            f"≈ k x {p.shard_ceiling:,.0f} (**projection**; needs the traffic spread over several"
            " route keys, and k times the edges and Nodes)",
        ],
        [
            f"one host vs {SHARDS} shards, same edge and Node (measured)",
            f"{three.load.rps / one.load.rps:.2f}x req/s (Redis is not the bottleneck here)",
        ],
    ]
    return "\n".join(
        [
            f"Measured {facts['date']} on a shared {facts['cores']}-core machine (load average"
            f" {load}) at {git_revision()} by `make bench` (`python -m bench scaling`): one edge"
            " and one worker serving a hello world, with a private Redis on loopback. Method,"
            " every figure and every run in"
            " [benchmarks.md](benchmarks.md#scaling-redis-cost-per-request-one-host-vs-three).",
            "",
            markdown_table(["figure", "value"], rows, "ll"),
        ]
    )


def chart_panels(outcome: Outcome) -> list[chart.Panel]:
    one, three = outcome.gateway_median(1), outcome.gateway_median(SHARDS)
    names = ("1 host", f"{SHARDS} hosts")
    return [
        chart.Panel(
            "layer throughput",
            "msg/s",
            dict(zip(names, (outcome.layer_median(1), outcome.layer_median(SHARDS)), strict=True)),
        ),
        chart.Panel(
            "gateway", "req/s", dict(zip(names, (one.load.rps, three.load.rps), strict=True))
        ),
        chart.Panel(
            "gateway p99",
            "ms",
            dict(zip(names, (one.load.p99_ms, three.load.p99_ms), strict=True)),
            False,
        ),
        chart.Panel(
            "Redis CPU per request",
            "µs",
            dict(
                zip(
                    names,
                    (
                        one.per_request(one.total.cpu) * 1e6,
                        three.per_request(three.total.cpu) * 1e6,
                    ),
                    strict=True,
                )
            ),
            False,
        ),
    ]


def main(sizes: ScalingSizes = FULL, *, loop: str = "asyncio", write: bool = True) -> bool:
    """Run the four setups, print the tables, record them; True when nothing failed or was lost."""
    load_before = load_average()
    server = _server_version()
    print(
        f"scaling: Redis cost per gateway request, 1 vs {SHARDS} hosts; "
        f"{bench_http.load_generator()} load, {sizes.connections} connections x "
        f"{sizes.duration:.0f} s, {sizes.runs} round(s); {server}",
        flush=True,
    )
    outcome = run(sizes, loop)
    one = outcome.gateway_median(1)
    p = projection(one)
    print()
    print(plain_table(["per request (1 edge, 1 worker, 1 Redis)", "value"], cost_rows(one), "lr"))
    print()
    print(plain_table(["command", "per request"], command_rows(one), "lr"))
    print()
    print("projection (not measured): one shard = 1 core / Redis CPU per request")
    print(plain_table(PROJECTION_HEADER, projection_rows(p), "rrrr"))
    print()
    print(plain_table(COMPARISON_HEADER, comparison_rows(outcome), "lrrr"))
    print()
    print(plain_table(["every run", "1 host", f"{SHARDS} hosts"], every_run_rows(outcome), "lrr"))
    load = f"{load_before} before, {load_average()} after"
    print(f"load average: {load}; errors or lost messages: {outcome.errors}")
    image = chart.record(
        SECTION,
        f"One Redis host vs {SHARDS}: layer throughput and the gateway (1 edge, 1 worker)",
        chart_panels(outcome),
        write=write,
        alt=f"One Redis host beside {SHARDS}: layer msg/s, gateway req/s, p99, Redis CPU/request",
        note=f"{machine_facts()['date']}, {os.cpu_count()} cores, median of {sizes.runs} run(s)",
    )
    if write:
        replace_section(SECTION, markdown(outcome, sizes, loop, load, server, image))
        replace_section(SECTION, scaling_md_summary(outcome, load), SCALING_MD)
        print(f"(written to docs/benchmarks.md and docs/scaling.md, section {SECTION})")
    print(flush=True)
    return outcome.errors == 0


def _measure_in_subprocess(spec_json: str) -> int:
    spec = json.loads(spec_json)
    coroutine = _throughput(spec["hosts"], Sizes(**spec["sizes"]))
    result = bench_http.run_in(spec.get("loop", "asyncio"), coroutine)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_measure_in_subprocess(sys.argv[1]))
