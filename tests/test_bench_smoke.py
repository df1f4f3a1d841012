"""Smoke test of ``make bench``'s channel-layer section: the quick throughput case runs against
our layer (channels_redis, the baseline, is only in the bench venv and is not needed here)."""

from __future__ import annotations

from dataclasses import replace

from bench import layer as bench_layer


async def test_quick_throughput_of_our_layer(redis_url: str, prefix: str) -> None:
    sizes = bench_layer.QUICK
    result = await bench_layer.run_case("throughput", "ours", redis_url, prefix, sizes)
    assert result["received"] == sizes.messages
    assert result["lost"] == 0
    assert result["rate"] > 0


def test_table_marks_targets() -> None:
    costs = {"send_us": 20.0, "receive_us": 30.0, "group_send_us": 40.0}
    ours = {"rate": 1000.0, "p50_us": 100.0, "p99_us": 200.0, "lost": 0.0, **costs}
    other = {"rate": 100.0, "p50_us": 200.0, "p99_us": 400.0, "lost": 5.0, **costs}
    median = {
        (case, kind): ours if kind == "ours" else other
        for case in bench_layer.CASES
        for kind in bench_layer.LAYERS
    }
    rows, verdicts = bench_layer.table_rows(median)
    assert verdicts == [True] * 6
    assert rows[0][4:6] == ["10.0x", "10.0x"]
    by_label = {row[0]: row for row in rows}
    assert by_label["CPU per send (µs)"][1:4] == ["20.0", "20.0", "20.0"]
    assert by_label["throughput, sequential (msg/s)"][-1] == "PASS"

    # Sequential throughput just under pubsub's misses its 1.0x target; windowed at 9.9x core
    # misses >= 10x core.
    median["sequential", "ours"] = {**ours, "rate": 99.0}
    median["throughput", "ours"] = {**ours, "rate": 990.0}
    rows, verdicts = bench_layer.table_rows(median)
    by_label = {row[0]: row for row in rows}
    assert by_label["throughput, sequential (msg/s)"][-1] == "MISSED"
    assert by_label["throughput, windowed (msg/s)"][-1] == "MISSED"
    assert verdicts.count(False) == 2


async def test_sequential_cases_of_our_layer(redis_url: str, prefix: str) -> None:
    """Each send (each group_send) awaited before the next; every message still arrives."""
    sizes = replace(bench_layer.QUICK, sequential_messages=200, warmup=10, fanout_rounds=1)
    result = await bench_layer.run_case("sequential", "ours", redis_url, prefix, sizes)
    assert result["received"] == 200 and result["lost"] == 0 and result["rate"] > 0
    fanout = await bench_layer.run_case("fanout_sequential", "ours", redis_url, prefix, sizes)
    assert fanout["lost"] == 0
    assert fanout["deliveries"] == sizes.groups * sizes.members * sizes.fanout_rounds


async def test_one_operation_cpu_cost_of_our_layer(redis_url: str, prefix: str) -> None:
    """µs of CPU per send, receive and group_send, with a peer process at the other end."""
    sizes = replace(bench_layer.QUICK, operations=100, warmup=10)
    result = await bench_layer.run_case("opcost", "ours", redis_url, prefix, sizes)
    assert result["operations"] == 100
    for key in ("send_us", "receive_us", "group_send_us"):
        # More than nothing, and less than a whole second of CPU per operation.
        assert 0 < result[key] < 1e6, (key, result)


def test_scaling_section_with_tiny_sizes() -> None:
    """``python -m bench scaling`` end to end with tiny sizes: real servers, nothing written."""
    from dataclasses import replace

    from bench import cases
    from bench import scaling as bench_scaling

    sizes = bench_scaling.ScalingSizes(
        connections=2,
        duration=1.0,
        warmup=0.2,
        runs=1,
        layer=replace(cases.QUICK, messages=300, warmup=20, timeout=10.0),
    )
    outcome = bench_scaling.run(sizes)
    assert outcome.errors == 0
    assert all(result["received"] == 300 for runs in outcome.layer.values() for result in runs)
    for hosts in (1, bench_scaling.SHARDS):
        run = outcome.gateway_median(hosts)
        assert run.load.requests > 0
        assert len(run.redis) == hosts
        total = run.total
        # Every request is at least the edge's connect and the worker's response, two pushes
        # (a send within capacity runs no script); pushes to one queue written in one batch
        # are one RPUSH, and two connections give a batch at most two of each.
        assert run.per_request(total.commands.get("evalsha", 0)) < 0.1
        assert run.per_request(total.commands.get("rpush", 0)) >= 1.0
        assert total.net_in > 0 and total.net_out > 0 and total.cpu > 0
    projection = bench_scaling.projection(outcome.gateway_median(1))
    assert projection.shard_ceiling > outcome.gateway_median(1).load.rps
    text = bench_scaling.markdown(outcome, sizes, "asyncio", "0 0 0", "redis test")
    assert "projection" in text and "Redis CPU per request" in text
    assert "projection" in bench_scaling.scaling_md_summary(outcome)


def test_idle_section_with_tiny_sizes() -> None:
    """``python -m bench idle`` end to end with a few connections: real servers and WebSockets,
    the idle window's CPU, memory and Redis commands measured, nothing written."""
    from bench import idle as bench_idle

    sizes = bench_idle.IdleSizes(connections=10, idle=1.0, settle=0.2, opening=5, timeout=15.0)
    outcome = bench_idle.run(sizes)
    for run in (outcome.direct, outcome.gateway):
        assert run.failures == []
        assert run.opened == run.answering == 10
        assert run.seconds >= 1.0
    assert outcome.direct.core_share("uvicorn") is not None
    assert outcome.direct.memory_per_connection("uvicorn") is not None
    gateway = outcome.gateway
    for role in ("edge", "worker"):
        assert gateway.core_share(role) is not None, role
        assert gateway.memory_per_connection(role) is not None, role
    assert gateway.redis is not None
    # The counters are read over one connection made before the reset: reading them costs
    # nothing that is counted. (A HELLO may still be counted: on a loaded machine a process
    # can open one of its own connections late, inside the idle window.)
    assert "info" not in gateway.redis.commands
    rate = gateway.commands_per_second()
    assert rate is not None and rate >= (gateway.commands_per_second(presence=False) or 0.0)
    assert len(outcome.verdicts()) == 5
    assert bench_idle.table_rows(outcome)[0][0].startswith("connections open")
    text = bench_idle.markdown(outcome, sizes, "0 0 0")
    assert "idle window" in text and "memory per connection" in text.lower()


def test_idle_verdicts() -> None:
    from bench import idle as bench_idle
    from bench.counters import RedisCounters

    def idle_run(
        setup: str, cpu: dict[str, float], commands: dict[str, int] | None
    ) -> bench_idle.IdleRun:
        return bench_idle.IdleRun(
            setup=setup,
            connections=2_000,
            opened=2_000,
            answering=2_000,
            failures=[],
            open_seconds=1.0,
            seconds=30.0,
            rss_before={role: 100_000_000 for role in cpu},
            rss_after={role: 120_000_000 for role in cpu},
            cpu=dict(cpu),
            redis=None if commands is None else RedisCounters(commands, 0, 0, 0.0),
        )

    direct = idle_run("direct", {"uvicorn": 0.1}, None)
    # 300 commands in 30 s (10/s) plus 15 presence SETs; 0.5 s of CPU in 30 s is 1.7% of a core.
    quiet = idle_run("gateway", {"edge": 0.5, "worker": 0.5}, {"evalsha": 300, "set": 15})
    outcome = bench_idle.IdleOutcome(direct, quiet)
    assert [ok for _, ok in outcome.verdicts()] == [True] * 5
    assert quiet.memory_per_connection("edge") == 10_000
    busy = idle_run("gateway", {"edge": 0.6, "worker": 0.6}, {"evalsha": 301, "set": 15})
    busy.answering = 1_999
    outcome = bench_idle.IdleOutcome(direct, busy)
    assert [ok for _, ok in outcome.verdicts()] == [False, False, False, True, False]


def test_cores_section_with_tiny_sizes() -> None:
    """``python -m bench cores`` end to end: 1+1 and 2+2 processes serve, each role's CPU is
    summed over its processes, nothing written."""
    from bench import cores
    from bench import http as bench_http

    sizes = bench_http.HttpSizes(connections=4, duration=1.0, warmup=0.5, runs=1)
    runs = {name: cores.measure(name, n, sizes, "asyncio") for name, n in cores.SETUPS.items()}
    for run in runs.values():
        assert run.load.requests > 0 and run.load.errors == 0
        assert run.cpu_us["edge"] > 0 and run.cpu_us["worker"] > 0
