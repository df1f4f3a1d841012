"""Smoke test of ``make bench``'s channel-layer section: the quick throughput case runs against
our layer (channels_redis, the baseline, is only in the bench venv and is not needed here)."""

from __future__ import annotations

from bench import layer as bench_layer


async def test_quick_throughput_of_our_layer(redis_url: str, prefix: str) -> None:
    sizes = bench_layer.QUICK
    result = await bench_layer.run_case("throughput", "ours", redis_url, prefix, sizes)
    assert result["received"] == sizes.messages
    assert result["lost"] == 0
    assert result["rate"] > 0


def test_table_marks_targets() -> None:
    ours = {"rate": 1000.0, "p50_us": 100.0, "p99_us": 200.0, "lost": 0.0}
    other = {"rate": 100.0, "p50_us": 200.0, "p99_us": 400.0, "lost": 5.0}
    median = {
        (case, kind): ours if kind == "ours" else other
        for case in bench_layer.CASES
        for kind in bench_layer.LAYERS
    }
    rows, verdicts = bench_layer.table_rows(median)
    assert verdicts == [True, True, True, True]
    assert rows[0][4:6] == ["10.0x", "10.0x"]


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
