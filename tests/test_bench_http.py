"""Smoke test of ``make bench``'s http section: both setups really serve, every answer checked."""

from __future__ import annotations

import pytest

from bench import http as bench_http


def test_python_load_generator_checks_every_answer() -> None:
    with bench_http.direct_server() as (port, _pids):
        load = bench_http.run_python(port, connections=4, duration=1.0, loop="asyncio")
    assert load.requests > 0
    assert load.errors == 0
    assert 0 < load.p50_ms <= load.p99_ms


def test_both_setups_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_http, "load_generator", lambda: "python")
    sizes = bench_http.HttpSizes(connections=4, duration=1.0, warmup=0.2, runs=1)
    outcome = bench_http.run(sizes)
    assert outcome.correct
    assert outcome.direct.requests > 0 and outcome.gateway.requests > 0
    rows = bench_http.table_rows(outcome)
    assert [row[0] for row in rows] == ["direct", "gateway", "gateway / direct"]
    assert len(outcome.verdicts()) == 3


def test_verdicts_against_targets() -> None:
    direct = bench_http.Load(requests=10_000, seconds=1.0, p50_ms=1.0, p99_ms=2.0, errors=0)
    good = bench_http.Load(requests=4_000, seconds=1.0, p50_ms=2.0, p99_ms=6.0, errors=0)
    slow = bench_http.Load(requests=3_999, seconds=1.0, p50_ms=2.0, p99_ms=6.1, errors=1)
    passing = bench_http.Outcome(direct, good, {"direct": [direct], "gateway": [good]})
    assert [ok for _, ok in passing.verdicts()] == [True, True, True]
    failing = bench_http.Outcome(direct, slow, {"direct": [direct], "gateway": [slow]})
    assert [ok for _, ok in failing.verdicts()] == [False, False, False]
