"""``python -m bench.calls``: every operation is measured against a real Redis, alone and
batched, and the table names each."""

from __future__ import annotations

import pytest

from bench import calls


def test_measures_every_operation_alone_and_batched() -> None:
    figures = calls.measure(calls.Sizes(batch=10, rounds=5, repeats=1), "asyncio")
    assert tuple(figures) == calls.OPERATIONS
    for name, (alone, batched) in figures.items():
        assert alone > 0 and batched > 0, name


def test_prints_one_row_per_operation(capsys: pytest.CaptureFixture[str]) -> None:
    assert calls.main(["--batch", "5", "--rounds", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in calls.OPERATIONS:
        assert f"\n{name} " in out
