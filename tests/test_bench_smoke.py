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
