"""``python -m bench.edge_own``: the distributor serves every request of the batch over a layer
with no I/O, and its CPU per request is given in all and with the driver's shares taken off."""

from __future__ import annotations

import pytest

from bench import edge_own


def test_every_request_is_answered_whole_and_each_part_costs_something() -> None:
    parts = edge_own.measure(200)  # raises when a request was not answered from its accept
    assert set(parts) == {
        "the distributor, as driven",
        "the stub's answer (in it)",
        "the hello world, as driven",
        "the edge's own code",
    }
    assert all(value > 0 for value in parts.values())
    assert parts["the edge's own code"] < parts["the distributor, as driven"]


def test_the_stub_answers_a_connect_with_the_accept_of_a_whole_response() -> None:
    accept = edge_own.answer({"id": "c7", "reply": "edge.stub!7"})
    assert (accept["t"], accept["id"]) == ("accept", "c7")
    assert [m["type"] for m in accept["m"]] == ["http.response.start", "http.response.body"]


def test_the_table_has_a_row_per_part(capsys: pytest.CaptureFixture[str]) -> None:
    assert edge_own.main(["--requests", "100", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "the edge's own code, 100 requests a batch, 2 batches" in out
    assert out.count(" / ") >= 4
