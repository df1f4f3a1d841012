"""``python -m bench.node_own``: the Node's own code serves every request of the batch over a
layer with no I/O, and its CPU per request is given in all and by part."""

from __future__ import annotations

import pytest

from bench import node_own


def test_every_request_is_served_and_each_part_costs_something() -> None:
    parts = node_own.measure(200)  # raises when a request was not served with one frame
    assert set(parts) == {
        "the Node's own code",
        "msgpack.unpackb of the connect",
        "decode_frame",
        "NodeConnection(...)",
        "NodeConnection.run",
    }
    assert all(value > 0 for value in parts.values())


def test_the_table_has_a_row_per_part(capsys: pytest.CaptureFixture[str]) -> None:
    assert node_own.main(["--requests", "100", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "100 requests a batch, 2 batches" in out
    assert out.count(" / ") >= 5
