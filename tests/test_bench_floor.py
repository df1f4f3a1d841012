"""``python -m bench.floor``: the floor really serves the hello world the gateway's way (through
Redis), and the comparison table is built from measured runs of all three setups."""

from __future__ import annotations

import pytest

from bench import floor
from bench import http as bench_http


def test_floor_serves_every_request_through_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_http, "load_generator", lambda: "python")
    sizes = bench_http.HttpSizes(connections=4, duration=1.0, warmup=0.2, runs=1)
    runs = floor.compare(sizes, "asyncio")
    assert set(runs) == {"direct", "floor", "gateway"}
    for name, (run,) in runs.items():
        assert run.load.requests > 0 and run.load.errors == 0, name
    floor_run = runs["floor"][0]
    for role in floor.ROLES:
        cpu = floor_run.cpu_us(role)
        assert cpu is not None and cpu > 0, role
    # Each request is at least its push to the route list and its response's push.
    assert floor_run.commands is not None and floor_run.commands >= 1.0
    table = floor.rows(runs)
    assert [row[0] for row in table] == [
        "req/s",
        "edge CPU per request (µs)",
        "worker CPU per request (µs)",
        "redis CPU per request (µs)",
        "Redis commands per request",
    ]
