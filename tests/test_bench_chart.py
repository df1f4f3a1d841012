"""``make bench`` draws each section's figures as a PNG beside its table: drawn here from sample
figures (no measuring), read back, and linked from the generated section."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import chart
from bench import http as bench_http
from bench import layer as bench_layer

pytest.importorskip(
    "matplotlib", reason="matplotlib is in the bench and dev extras: pip install -e '.[dev]'"
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pixels(path: Path) -> set[tuple[int, int, int]]:
    from matplotlib import image

    data = image.imread(str(path))
    assert data.ndim == 3
    rgb = (data[..., :3] * 255).round().astype(int).reshape(-1, 3)
    return {(int(r), int(g), int(b)) for r, g, b in rgb}


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def sample_layer_medians() -> dict[tuple[str, str], dict[str, float]]:
    figures = {
        "ours": {"rate": 16_536.0, "p50_us": 634.0, "p99_us": 1_130.0, "lost": 0.0},
        "core": {"rate": 807.0, "p50_us": 2_577.0, "p99_us": 6_311.0, "lost": 0.0},
        "pubsub": {"rate": 3_812.0, "p50_us": 508.0, "p99_us": 1_345.0, "lost": 0.0},
    }
    for kind, cost in (("ours", 30.0), ("core", 200.0), ("pubsub", 50.0)):
        figures[kind] |= {"send_us": cost, "receive_us": cost * 2, "group_send_us": cost * 3}
    return {(case, kind): figures[kind] for case in bench_layer.CASES for kind in figures}


def sample_http_outcome() -> bench_http.Outcome:
    direct = bench_http.Load(requests=181_300, seconds=10.0, p50_ms=1.33, p99_ms=6.28, errors=0)
    gateway = bench_http.Load(requests=35_340, seconds=10.0, p50_ms=7.12, p99_ms=27.42, errors=0)
    direct_run = bench_http.Run(direct, 10.0, {"uvicorn": 7.0})
    gateway_run = bench_http.Run(gateway, 10.0, {"edge": 9.0, "worker": 8.0, "redis": 3.0})
    return bench_http.Outcome({"direct": [direct_run], "gateway": [gateway_run]})


def test_layer_chart_has_a_panel_per_compared_case_and_a_bar_per_layer(tmp_path: Path) -> None:
    panels = bench_layer.chart_panels(sample_layer_medians())
    assert [(p.title, p.unit, p.higher_is_better) for p in panels] == [
        ("throughput, windowed", "msg/s", True),
        ("throughput, sequential", "msg/s", True),
        ("ping-pong p50", "µs", False),
        ("fan-out, windowed", "deliveries/s", True),
        ("fan-out, sequential", "deliveries/s", True),
        ("CPU per send", "µs", False),
        ("CPU per receive", "µs", False),
        ("CPU per group_send", "µs", False),
    ]
    assert panels[5].values == {"ours": 30.0, "core": 200.0, "pubsub": 50.0}
    assert panels[0].values == {"ours": 16_536.0, "core": 807.0, "pubsub": 3_812.0}

    path = chart.draw("Channel layer", panels, tmp_path / "layer-bench.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    colours = _pixels(path)
    # One colour per layer: all three bar colours are on the picture.
    for colour in chart.COLOURS[:3]:
        assert _rgb(colour) in colours, colour


def test_http_chart_direct_beside_gateway(tmp_path: Path) -> None:
    panels = bench_http.chart_panels(sample_http_outcome())
    assert [p.title for p in panels] == [
        "throughput",
        "p50 latency",
        "p99 latency",
        "CPU per request",
    ]
    assert panels[0].values == {"direct": pytest.approx(18_130.0), "gateway": 3_534.0}
    assert panels[2].values == {"direct": 6.28, "gateway": 27.42}
    # µs per request: CPU seconds / requests answered, for each process.
    assert panels[3].values == {
        "direct": pytest.approx(7.0 / 181_300 * 1e6),
        "edge": pytest.approx(9.0 / 35_340 * 1e6),
        "worker": pytest.approx(8.0 / 35_340 * 1e6),
        "redis": pytest.approx(3.0 / 35_340 * 1e6),
    }

    path = chart.draw("HTTP", panels[:3], tmp_path / "http-bench.png", note="sample figures")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert {_rgb(chart.COLOURS[0]), _rgb(chart.COLOURS[1])} <= _pixels(path)
    assert _rgb(chart.COLOURS[2]) not in _pixels(path)  # two setups, two colours
    path = chart.draw("HTTP", panels, tmp_path / "http-bench.png")
    assert {_rgb(colour) for colour in chart.COLOURS[:5]} <= _pixels(path)  # five setups


def test_a_figure_that_was_not_measured_still_draws(tmp_path: Path) -> None:
    panel = chart.Panel("throughput", "msg/s", {"ours": 10.0, "core": None})
    path = chart.draw("partial", [panel], tmp_path / "partial.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_recorded_section_links_its_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(chart, "IMG_DIR", tmp_path / "img")
    outcome = sample_http_outcome()
    image = chart.record(
        "http-bench", "HTTP", bench_http.chart_panels(outcome), write=True, alt="HTTP figures"
    )
    assert image == "![HTTP figures](img/http-bench.png)"
    assert (tmp_path / "img" / "http-bench.png").read_bytes().startswith(PNG_SIGNATURE)
    sizes = bench_http.QUICK
    section = bench_http.markdown(outcome, sizes, "asyncio", "0.00 0.00 0.00", image)
    lines = section.splitlines()
    # The picture comes right before the table it draws.
    assert lines[lines.index(image) + 2].startswith("| figure | direct | gateway |")

    # A run that records nothing (--no-write, --quick) draws into a temporary folder and
    # links nothing.
    assert (
        chart.record("http-bench", "HTTP", bench_http.chart_panels(outcome), write=False, alt="x")
        is None
    )
    assert "distributed-asgi-bench/http-bench.png" in capsys.readouterr().out


def test_no_chart_without_matplotlib_but_the_section_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chart, "IMG_DIR", tmp_path / "img")
    monkeypatch.setattr(chart, "matplotlib_available", lambda: False)
    panels = bench_http.chart_panels(sample_http_outcome())
    assert chart.record("http-bench", "HTTP", panels, write=True, alt="x") is None
    assert not (tmp_path / "img").exists()
    section = bench_http.markdown(sample_http_outcome(), bench_http.QUICK, "asyncio", "0", None)
    assert "![" not in section
