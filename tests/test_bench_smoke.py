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
        # Every request is at least the edge's connect and the worker's response: two scripts.
        assert run.per_request(total.commands.get("evalsha", 0)) >= 1.5
        assert total.net_in > 0 and total.net_out > 0 and total.cpu > 0
    projection = bench_scaling.projection(outcome.gateway_median(1))
    assert projection.shard_ceiling > outcome.gateway_median(1).load.rps
    text = bench_scaling.markdown(outcome, sizes, "asyncio", "0 0 0", "redis test")
    assert "projection" in text and "Redis CPU per request" in text
    assert "projection" in bench_scaling.scaling_md_summary(outcome)
