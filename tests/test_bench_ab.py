"""``python -m bench ab``'s summary: medians of each build's runs, side by side."""

from __future__ import annotations

from bench.ab import summary_rows


def test_summary_gives_medians_and_their_ratio() -> None:
    this = [
        {"rps": 100.0, "edge": 10.0},
        {"rps": 300.0, "edge": 30.0},
        {"rps": 200.0, "edge": 20.0},
    ]
    base = [{"rps": 100.0, "edge": 40.0}, {"rps": 100.0, "edge": 40.0}]
    rows = summary_rows(this, base)
    assert rows == [
        ["req/s", "200.0", "100.0", "2.00x"],
        ["edge CPU per request (µs)", "20.0", "40.0", "0.50x"],
    ]


def test_a_figure_one_build_lacks_is_left_out() -> None:
    assert summary_rows([{"rps": 1.0, "edge_writes": 2.0}], [{"rps": 1.0}]) == [
        ["req/s", "1.0", "1.0", "1.00x"]
    ]
