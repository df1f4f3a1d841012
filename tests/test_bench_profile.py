"""``python -m bench.profile``: the edge and the worker profiled under a short load; the text
summaries name the gateway's own functions, ranked both ways."""

from __future__ import annotations

import cProfile
import pstats
import re
from pathlib import Path

import pytest

from bench import http as bench_http
from bench import profile as bench_profile

# calls, tottime, cumtime, cum %, own %, function
ENTRY = re.compile(r"^ *[\d,]+ +\d+\.\d{3} +\d+\.\d{3} +[\d.]+% +[\d.]+%  \S")


def test_profiles_of_edge_and_worker_under_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_http, "load_generator", lambda: "python")
    sizes = bench_http.HttpSizes(connections=2, duration=1.0, warmup=0.2, runs=1)
    profiles = bench_profile.profile_gateway(tmp_path, sizes)
    assert profiles.load.requests > 0 and profiles.load.errors == 0

    edge = bench_profile.summary(profiles.edge, "edge", top=10)
    worker = bench_profile.summary(profiles.worker, "worker", top=10)
    for text in (edge, worker):
        assert "== top 10 by cumulative time" in text and "== top 10 by own time" in text
        listed = [line for line in text.splitlines() if ENTRY.match(line)]
        assert len(listed) == 20
        # Profiled from the start of the measured load: no start-up chain, no imports.
        assert "click/core.py" not in text and "runpy" not in text
    # Which of the gateway's functions rank highest varies from run to run; that some do
    # shows the profile covers the gateway's own code, not only the server and the loop.
    assert "distributed_asgi/" in edge
    assert "distributed_asgi/" in worker


def test_calls_per_request_are_the_profile_s_calls_over_the_requests(tmp_path: Path) -> None:
    def count(n: int) -> int:
        return n if n < 2 else count(n - 1) + 1

    profiler = cProfile.Profile()
    profiler.runcall(count, 99)  # 99 calls of count, one of runcall's own
    path = tmp_path / "count.prof"
    profiler.dump_stats(str(path))
    calls = pstats.Stats(str(path)).total_calls  # type: ignore[attr-defined]
    text = bench_profile.summary(path, "count", top=3, requests=4)
    assert f"{calls:,} calls ({calls / 4:,.0f} a request)," in text
    assert "a request" not in bench_profile.summary(path, "count", top=3)


def test_main_writes_both_summaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_http, "load_generator", lambda: "python")
    code = bench_profile.main(
        [
            "--seconds",
            "1",
            "--warmup",
            "0.2",
            "--connections",
            "2",
            "--top",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    for name in ("edge", "worker"):
        text = (tmp_path / f"profile-{name}.txt").read_text()
        assert text.startswith(f"cProfile of the {name} (")
