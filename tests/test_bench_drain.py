"""``python -m bench.drain``: a real worker answers every connect of the burst, and its CPU per
request is measured from /proc over exactly that work."""

from __future__ import annotations

import pytest

from bench import drain
from distributed_asgi.ops.redis_process import RedisProcess


def test_the_worker_answers_every_connect_of_the_burst() -> None:
    with RedisProcess() as redis:
        run = drain.drain(drain.ROOT, redis.url, 300, "drain-test")
    assert run.requests == 300
    assert run.answered >= 300  # one frame each, and no connect left unanswered
    assert run.cpu > 0 and run.cpu_us > 0
    assert run.seconds > 0


def test_a_comparison_prints_both_trees_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert drain.main(["--requests", "200", "--rounds", "1", "--against", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "this tree / HEAD" in out
    assert out.count("answer frames for 200 connects") == 2
