"""Smoke test of ``make bench``'s http section: both setups really serve, every answer checked,
and what each run cost every process and Redis is read from /proc and Redis's counters."""

from __future__ import annotations

import pytest

from bench import http as bench_http
from bench.counters import RedisCounters


def test_python_load_generator_checks_every_answer() -> None:
    with bench_http.direct_server() as setup:
        load = bench_http.run_python(setup.port, connections=4, duration=1.0, loop="asyncio")
    assert load.requests > 0
    assert load.errors == 0
    assert 0 < load.p50_ms <= load.p99_ms


def test_both_setups_measured_with_their_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_http, "load_generator", lambda: "python")
    sizes = bench_http.HttpSizes(connections=4, duration=1.0, warmup=0.2, runs=1, single=1.0)
    outcome = bench_http.run(sizes)
    assert outcome.correct
    assert outcome.direct.requests > 0 and outcome.gateway.requests > 0

    direct, gateway = outcome.runs["direct"][0], outcome.runs["gateway"][0]
    assert set(direct.cpu) == {"uvicorn"} and direct.redis is None
    assert set(gateway.cpu) == {"edge", "worker", "redis"}
    for role in ("edge", "worker", "redis"):
        cpu = gateway.cpu_us(role)
        assert cpu is not None and cpu > 0, role
    assert outcome.direct_cpu_us is not None and outcome.direct_cpu_us > 0
    # Every request is at least the Node's claim (one SET), besides the pushes of its connect
    # and response, which a batch may merge; a send within capacity runs no script.
    assert gateway.commands is not None and gateway.commands >= 1
    assert gateway.scripts is not None and gateway.scripts < 0.1
    assert gateway.redis is not None and "info" not in gateway.redis.commands  # ours: not counted

    rows = bench_http.table_rows(outcome)
    labels = [row[0] for row in rows]
    assert labels[:3] == ["req/s", "p50 ms", "p99 ms"]
    assert "Redis commands per request" in labels and "script calls per request" in labels
    assert len(outcome.verdicts()) == 8
    assert [row[0] for row in bench_http.run_rows(outcome)] == ["direct", "gateway"]
    text = bench_http.markdown(outcome, sizes, "asyncio", "0 0 0")
    assert "Every run, in order" in text and "CONFIG RESETSTAT" in text

    # One request at a time, on the same servers: measured with its own costs.
    assert set(outcome.single) == {"direct", "gateway"}
    alone = outcome.single["gateway"]
    assert alone.load.requests > 0 and alone.load.errors == 0
    assert all((alone.cpu_us(role) or 0) > 0 for role in ("edge", "worker", "redis"))
    assert "One request at a time" in text


def test_one_request_at_a_time_side_by_side() -> None:
    # 1,000 requests: direct 0.05 s of CPU (50 µs each); the edge 0.2 s (200 µs, 4x).
    direct = _run(1_000, 1.0, {"uvicorn": 0.05}, None)
    gateway = _run(
        500, 4.0, {"edge": 0.1, "worker": 0.05, "redis": 0.025}, {"evalsha": 500, "blmove": 4000}
    )
    outcome = bench_http.Outcome(
        {"direct": [direct], "gateway": [gateway]}, {"direct": direct, "gateway": gateway}
    )
    rows = {row[0]: row[1:] for row in bench_http.single_rows(outcome)}
    assert rows["req/s"] == ["1,000", "500", "0.50x"]
    assert rows["p99 ms"][2] == "4.00x"
    assert rows["edge CPU per request"] == ["50 µs (uvicorn)", "200 µs", "4.00x"]
    assert rows["all processes' CPU per request"][1:] == ["350 µs", "7.00x"]
    assert rows["Redis commands per request"][1] == "9.00"
    assert rows["script calls per request"][1] == "1.00"
    # Without it (sizes.single 0), the section has no such table.
    without = bench_http.Outcome({"direct": [direct], "gateway": [gateway]})
    sizes = bench_http.HttpSizes(connections=4, duration=1.0, warmup=0.2, runs=1)
    assert "One request at a time" not in bench_http.markdown(without, sizes, "asyncio", "0")


def _run(
    rps: int, p99: float, cpu: dict[str, float], commands: dict[str, int] | None
) -> bench_http.Run:
    load = bench_http.Load(requests=rps, seconds=1.0, p50_ms=p99 / 2, p99_ms=p99, errors=0)
    redis = None if commands is None else RedisCounters(commands, 0, 0, 0.0)
    return bench_http.Run(load=load, wall=1.0, cpu=dict(cpu), redis=redis)


def test_verdicts_against_targets() -> None:
    # 10,000 requests in 1 s at 50 µs of uvicorn CPU each: 0.5 s.
    direct = _run(10_000, 2.0, {"uvicorn": 0.5}, None)
    # 4,000 requests: edge 2.5x (125 µs), worker 2x (100 µs), Redis 0.5x (25 µs) per request;
    # 6 commands per request of which 1 script call.
    good = _run(
        4_000, 6.0, {"edge": 0.5, "worker": 0.4, "redis": 0.1}, {"evalsha": 4_000, "rpush": 20_000}
    )
    passing = bench_http.Outcome({"direct": [direct], "gateway": [good]})
    assert [ok for _, ok in passing.verdicts()] == [True] * 8
    assert passing.cpu_ratio("edge") == pytest.approx(2.5)

    slow = _run(
        3_999, 6.1, {"edge": 0.6, "worker": 0.5, "redis": 0.2}, {"evalsha": 8_000, "rpush": 20_000}
    )
    slow.load.errors = 1
    failing = bench_http.Outcome({"direct": [direct], "gateway": [slow]})
    assert [ok for _, ok in failing.verdicts()] == [False] * 8
    assert [row[-1] for row in bench_http.table_rows(failing) if row[-1]] == ["MISSED"] * 8


def test_a_cost_not_measured_misses_its_target() -> None:
    direct = _run(10_000, 2.0, {"uvicorn": 0.5}, None)
    unknown = bench_http.Run(
        load=bench_http.Load(requests=5_000, seconds=1.0, p50_ms=1.0, p99_ms=2.0, errors=0),
        wall=1.0,
        cpu={"edge": None, "worker": None},
    )
    outcome = bench_http.Outcome({"direct": [direct], "gateway": [unknown]})
    verdicts = dict(outcome.verdicts())
    assert verdicts["edge CPU per request <= 2.5x direct uvicorn's: not measured"] is False
    assert verdicts["Redis commands per request <= 6: not measured"] is False
