"""``python -m bench layer``: our channel layer beside channels_redis, on one private server.

Three layers, the same cases (``bench.cases``) for each:

- ``ours``: ``distributed_asgi.layers.RedisChannelLayer``
- ``core``: ``channels_redis.core.RedisChannelLayer``
- ``pubsub``: ``channels_redis.pubsub.RedisPubSubChannelLayer``

Every measurement runs in a fresh subprocess (fresh interpreter and event loop) with its own
key prefix, after a ``FLUSHALL``. Runs rotate through the layers (run 1: ours, core, pubsub;
run 2: core, pubsub, ours; ...) so a noisy moment on the shared machine does not always hit the
same layer, and the table shows the median of the runs. channels_redis is imported only inside
the functions that build its layers: it is installed in the bench venv only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import chart
from .cases import CASES, FULL, QUICK, Result, Sizes
from .report import (
    ROOT,
    git_revision,
    machine_facts,
    markdown_table,
    package_version,
    plain_table,
    replace_section,
)

__all__ = ["CASES", "FULL", "LAYERS", "QUICK", "Kit", "main", "measure", "run_case", "table_rows"]

LAYERS = ("ours", "core", "pubsub")
LAYER_CLASSES = {
    "ours": "distributed_asgi.layers.RedisChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
# High enough that no send is ever rejected (the pubsub layer has no capacity).
CAPACITY = 100_000
SECTION = "layer-bench"


class Kit:
    """Makes layer instances of one kind on one server and prefix, and closes them all."""

    def __init__(self, kind: str, url: str, prefix: str, members: int = 10) -> None:
        if kind not in LAYERS:
            raise ValueError(f"unknown layer {kind!r}; choose from {', '.join(LAYERS)}")
        self.kind, self.url, self.prefix = kind, url, prefix
        self.members = members  # the peer's group size (bench.cases.operation_cost)
        self.made: list[Any] = []

    def peer_command(self) -> list[str]:
        spec = {"kind": self.kind, "url": self.url, "prefix": self.prefix}
        spec["members"] = self.members
        return [sys.executable, "-m", "bench.peer", json.dumps(spec)]

    def new(self) -> Any:
        layer: Any
        if self.kind == "ours":
            from distributed_asgi.layers import RedisChannelLayer

            layer = RedisChannelLayer(hosts=[self.url], prefix=self.prefix, capacity=CAPACITY)
        elif self.kind == "core":
            from channels_redis.core import RedisChannelLayer as CoreLayer

            layer = CoreLayer(hosts=[self.url], prefix=self.prefix, capacity=CAPACITY)
        else:
            from channels_redis.pubsub import RedisPubSubChannelLayer

            layer = RedisPubSubChannelLayer(hosts=[self.url], prefix=self.prefix)
        self.made.append(layer)
        return layer

    async def close_all(self) -> None:
        for layer in self.made:
            if self.kind == "ours":
                await layer.close()
            elif self.kind == "core":
                await layer.close_pools()
            else:
                await layer.flush()  # the pubsub layer's flush() is also its close
        self.made.clear()


async def run_case(case: str, kind: str, url: str, prefix: str, sizes: Sizes) -> Result:
    """One measurement in the running event loop."""
    kit = Kit(kind, url, prefix, members=sizes.members)
    try:
        return await CASES[case](kit, sizes)
    finally:
        await kit.close_all()


class MeasurementFailed(RuntimeError):
    """A measurement's subprocess crashed or did not finish."""


def measure(case: str, kind: str, url: str, prefix: str, sizes: Sizes, loop: str) -> Result:
    """One measurement in a fresh subprocess (``python -m bench.worker``)."""
    spec = {"case": case, "kind": kind, "url": url, "prefix": prefix}
    spec |= {"sizes": asdict(sizes), "loop": loop}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.worker", json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=sizes.timeout * 10,
        )
    except subprocess.TimeoutExpired as exc:
        raise MeasurementFailed(f"{case}/{kind}: no result after {exc.timeout:.0f}s") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: Result = json.loads(line[len("RESULT ") :])
            return result
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    raise MeasurementFailed(f"{case}/{kind}: worker exited {done.returncode}\n{tail}")


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    case: str
    key: str
    higher_is_better: bool
    ratios: bool  # show ours/core and ours/pubsub
    target: str
    check: Callable[[dict[str, float]], bool] | None  # given {layer: median}, is the target met?
    digits: int = 0


ROWS = [
    Row(
        "throughput, windowed (msg/s)",
        "throughput",
        "rate",
        True,
        True,
        ">= 10x core, >= 2x pubsub",
        lambda v: v["ours"] >= 10 * v["core"] and v["ours"] >= 2 * v["pubsub"],
    ),
    Row(
        "throughput, sequential (msg/s)",
        "sequential",
        "rate",
        True,
        True,
        ">= 1.0x pubsub",
        lambda v: v["ours"] >= v["pubsub"],
    ),
    Row(
        "ping-pong p50 (µs)",
        "pingpong",
        "p50_us",
        False,
        True,
        "<= pubsub",
        lambda v: v["ours"] <= v["pubsub"],
    ),
    Row("ping-pong p99 (µs)", "pingpong", "p99_us", False, True, "", None),
    Row(
        "fan-out, windowed (deliveries/s)",
        "fanout",
        "rate",
        True,
        True,
        ">= 2x pubsub",
        lambda v: v["ours"] >= 2 * v["pubsub"],
    ),
    Row(
        "fan-out, sequential (deliveries/s)",
        "fanout_sequential",
        "rate",
        True,
        True,
        ">= 1.0x pubsub",
        lambda v: v["ours"] >= v["pubsub"],
    ),
    Row(
        "burst fan-out lost (of 1000)",
        "burst",
        "lost",
        False,
        False,
        "0 lost (ours)",
        lambda v: v["ours"] == 0,
    ),
    Row("CPU per send (µs)", "opcost", "send_us", False, True, "", None, digits=1),
    Row("CPU per receive (µs)", "opcost", "receive_us", False, True, "", None, digits=1),
    Row("CPU per group_send (µs)", "opcost", "group_send_us", False, True, "", None, digits=1),
]

# The chart shows the compared figures with a target, and the CPU cost of each operation.
CHART_SKIP = ("ping-pong p99 (µs)",)

HEADER = ["case", "ours", "core", "pubsub", "ours/core", "ours/pubsub", "better", "target", ""]
ALIGN = "lrrrrrlll"


def _number(value: float | None, digits: int) -> str:
    return "error" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float | None, other: float | None) -> str:
    if ours is None or other is None or other == 0:
        return "-"
    ratio = ours / other
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def medians(runs: dict[tuple[str, str], list[Result]]) -> dict[tuple[str, str], Result]:
    """Per (case, layer), the median of every figure over the runs that completed."""
    out: dict[tuple[str, str], Result] = {}
    for key, results in runs.items():
        if results:
            out[key] = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return out


def table_rows(median: dict[tuple[str, str], Result]) -> tuple[list[list[str]], list[bool]]:
    """The table's rows, and for each row with a target whether it passed."""
    rows: list[list[str]] = []
    verdicts: list[bool] = []
    for row in ROWS:
        values = {kind: median.get((row.case, kind), {}).get(row.key) for kind in LAYERS}
        cells = [row.label, *(_number(values[kind], row.digits) for kind in LAYERS)]
        if row.ratios:
            cells += [
                _ratio(values["ours"], values["core"]),
                _ratio(values["ours"], values["pubsub"]),
            ]
        else:
            cells += ["-", "-"]
        cells.append("higher" if row.higher_is_better else "lower")
        verdict = ""
        if row.check is not None:
            known = {k: v for k, v in values.items() if v is not None}
            passed = len(known) == len(LAYERS) and row.check(known)
            verdicts.append(passed)
            verdict = "PASS" if passed else "MISSED"
        rows.append([*cells, row.target or "-", verdict])
    return rows, verdicts


def chart_panels(median: dict[tuple[str, str], Result]) -> list[chart.Panel]:
    """One panel per compared case (the table's rows with ratios), each layer a bar."""
    panels = []
    for row in ROWS:
        if not row.ratios or row.label in CHART_SKIP:
            continue  # burst: a count of lost messages, zero for every layer when it passes
        title, _, unit = row.label.partition(" (")
        values = {kind: median.get((row.case, kind), {}).get(row.key) for kind in LAYERS}
        panels.append(chart.Panel(title, unit.rstrip(")"), values, row.higher_is_better))
    return panels


def run_rows(runs: dict[tuple[str, str], list[Result]]) -> list[list[str]]:
    """Every run's figure, in run order, to show the spread behind each median."""
    rows = []
    for row in ROWS:
        cells = [row.label]
        for kind in LAYERS:
            results = runs.get((row.case, kind), [])
            cells.append(" / ".join(_number(r[row.key], row.digits) for r in results) or "error")
        rows.append(cells)
    return rows


# -- the section ---------------------------------------------------------------------------------


def _server_facts(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
    finally:
        client.close()
    name = info.get("server_name") or "redis"
    version = info.get("valkey_version") or info.get("redis_version", "?")
    return f"{name} {version}"


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def _flushall(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def main(sizes: Sizes = FULL, *, loop: str = "asyncio", write: bool = True) -> bool:
    """Run the section, print its table and (with ``write``) record it; True if all pass."""
    from distributed_asgi.ops.redis_process import RedisProcess

    runs: dict[tuple[str, str], list[Result]] = {(c, k): [] for c in CASES for k in LAYERS}
    failures: list[str] = []
    print(f"== Channel layer: {', '.join(f'{k} = {c}' for k, c in LAYER_CLASSES.items())}")
    with RedisProcess() as server:
        server_version = _server_facts(server.url)
        load_before = _load_average()
        print(f"   server {server_version} at {server.url}, {sizes.runs} run(s), loop {loop}")
        for run in range(sizes.runs):
            order = LAYERS[run % len(LAYERS) :] + LAYERS[: run % len(LAYERS)]
            for case in CASES:
                for kind in order:
                    _flushall(server.url)
                    prefix = f"bench.{kind}.{case}.{run}"
                    try:
                        result = measure(case, kind, server.url, prefix, sizes, loop)
                    except MeasurementFailed as exc:
                        failures.append(str(exc))
                        print(f"   run {run + 1} {case:<10} {kind:<6} FAILED: {exc}")
                        continue
                    runs[case, kind].append(result)
                    figures = ", ".join(f"{k}={v:,.1f}" for k, v in result.items())
                    print(f"   run {run + 1} {case:<10} {kind:<6} {figures}")

    median = medians(runs)
    rows, verdicts = table_rows(median)
    spread = run_rows(runs)
    passed = all(verdicts) and not failures
    print()
    print(plain_table(HEADER, rows, ALIGN))
    print()
    print(plain_table(["each run", *LAYERS], spread, "lrrr"))
    losses = [
        f"{case}/{kind}: {result['lost']:.0f} lost"
        for (case, kind), result in median.items()
        if case != "burst" and result.get("lost")
    ]
    for note in losses + failures:
        print(f"   note: {note}")
    load = f"{load_before} at the start, {_load_average()} at the end"
    print(f"   load average (1 min, {os.cpu_count()} cores): {load}")
    print(f"\nChannel layer targets: {sum(verdicts)}/{len(verdicts)} pass")

    image = chart.record(
        SECTION,
        f"Channel layer: ours vs. channels_redis core and pubsub (median of {sizes.runs} run(s))",
        chart_panels(median),
        write=write,
        alt="Channel layer: throughput, ping-pong latency and fan-out of ours, core and pubsub",
        note=f"{machine_facts()['date']}, {os.cpu_count()} cores, event loop {loop}",
    )
    if write:
        body = _markdown(rows, spread, sizes, loop, server_version, load, losses + failures, image)
        replace_section(SECTION, body)
        print("   recorded in docs/benchmarks.md")
    return passed


def _markdown(
    rows: list[list[str]],
    spread: list[list[str]],
    sizes: Sizes,
    loop: str,
    server_version: str,
    load: str,
    notes: list[str],
    image: str | None = None,
) -> str:
    m = machine_facts()
    legend = "; ".join(f"**{kind}** `{cls}`" for kind, cls in LAYER_CLASSES.items())
    lines = [
        "## Channel layer",
        "",
        f"Recorded {m['date']} by `make bench` (`python -m bench layer`).",
        "",
        f"- Machine: `{m['arch']}`, {m['cpu']}, {m['cores']} cores, {m['system']}",
        f"- {m['python']}, redis-py {package_version('redis')}, "
        f"channels_redis {package_version('channels-redis')}, "
        f"msgpack {package_version('msgpack')}, event loop {loop}",
        f"- Server: {server_version}, one private server for all three layers",
        f"- Load average (1 min): {load}; the machine is shared, so figures move between runs",
        f"- distributed_asgi at {git_revision()}",
        f"- Layers: {legend}",
        "",
        *([image, ""] if image else []),
        f"Median of {sizes.runs} run(s) per figure; ratios are ours/other (`better` says "
        "which direction wins).",
        "",
        markdown_table([*HEADER[:-1], "result"], rows, ALIGN),
        "",
        "Every run, in order (runs rotate which layer goes first):",
        "",
        markdown_table(["case", *LAYERS], spread, "lrrr"),
        "",
        "How each case is measured (the same code for every layer):",
        "",
        f"- Every measurement is a fresh subprocess and event loop, with its own key prefix, "
        f"after `FLUSHALL`. Layers are built with `capacity={CAPACITY:_}` (pubsub has none).",
        f"- **throughput**: a producer and a consumer instance; {sizes.messages:,} small "
        f"messages (`type`, a counter, a 5-byte string) to one `new_channel()` channel of the "
        f"consumer. The producer gathers {sizes.window} `send()`s at a time, then the next "
        f"{sizes.window}; the consumer awaits one `receive()` at a time. Clock: first send to "
        f"last receive, after {sizes.warmup} warm-up messages.",
        f"- **throughput, sequential**: the same, but each `send()` is awaited before the next "
        f"(one in flight, as a consumer awaits it), {sizes.sequential_messages:,} messages.",
        f"- **ping-pong**: instance A sends to B's `new_channel()`, B echoes to A's; "
        f"{sizes.round_trips:,} timed round trips after {sizes.warmup} warm-up ones.",
        f"- **fan-out**: {sizes.groups} groups of {sizes.members} members; each member is a "
        f"`new_channel()` of one of {sizes.receivers} receiver instances, which adds it; "
        f"all members wait in `receive()`; one sender instance `group_send`s one message per "
        f"group ({sizes.window} in flight at once). Clock: first `group_send` to the last "
        f"delivery; one warm-up round and {sizes.fanout_rounds} timed rounds.",
        "- **fan-out, sequential**: the same, but each `group_send` is awaited before the next.",
        "- **burst**: the same groups, but every `group_send` happens before any member "
        f"receives; then all members drain at once (each waits up to {sizes.timeout / 4:.0f} "
        "s), and what did not arrive is counted lost.",
        f"- **CPU per send / receive / group_send**: µs of the measuring process's CPU "
        f"(`time.process_time`) per operation, {sizes.operations:,} of each awaited one at a "
        f"time after {sizes.warmup} warm-up ones. The other end is a separate process (its own "
        f"layer of the same kind): sends go to its `new_channel()`, `group_send`s to a group of "
        f"{sizes.members} of its channels, and receives take what it sends one at a time (the "
        "clock runs from the order to send to the last message received).",
    ]
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines)
