"""ops/collector.py: what the edge and worker commands do to Python's garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from distributed_asgi.ops.collector import OLDER_THRESHOLD, YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
def test_tune_collector_freezes_the_start_up_heap_and_collects_less_often() -> None:
    alive = object(), [1, 2]
    tune_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    assert gc.get_freeze_count() > 0
    # Garbage made afterwards is still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
    assert alive
