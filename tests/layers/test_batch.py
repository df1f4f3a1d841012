"""A batch of calls as one write's commands (layers/batch.py): pure, no server."""

from __future__ import annotations

from typing import Any

from distributed_asgi.layers.batch import COMMAND, COMMANDS, Call, assemble, regroup
from distributed_asgi.layers.scripts import LuaScript

SCRIPT = LuaScript("script", "return 1")


def push(queue: str, entry: bytes) -> Call:
    return (COMMANDS, (), [("RPUSH", queue, entry), ("PEXPIRE", queue, 1000)], None)


def command(*args: Any) -> Call:
    return (COMMAND, (), list(args), None)


def test_pushes_to_one_queue_around_plain_commands_are_one_rpush() -> None:
    batch = [
        command("SET", "c1", "a", "NX"),
        push("q", b"1"),
        command("SET", "c2", "a", "NX"),
        push("q", b"2"),
        command("SET", "c3", "a", "NX"),  # after the last push: stays where it is
        push("other", b"3"),
    ]
    commands, spans = assemble(batch)
    assert commands == [
        ["SET", "c1", "a", "NX"],
        ("RPUSH", "q", b"1", b"2"),
        ("PEXPIRE", "q", 1000),
        ["SET", "c2", "a", "NX"],
        ["SET", "c3", "a", "NX"],
        ("RPUSH", "other", b"3"),
        ("PEXPIRE", "other", 1000),
    ]
    replies = ["OK", 2, 1, None, "OK", 1, 1]
    # Each push is answered the length its own RPUSH would have returned.
    assert regroup(batch, spans, replies) == ["OK", [1, 1], None, [2, 1], "OK", [1, 1]]


def test_each_push_of_a_merged_rpush_gets_the_length_just_after_its_entry() -> None:
    batch = [push("q", b"1"), push("q", b"2"), push("q", b"3")]
    commands, spans = assemble(batch)
    assert commands == [("RPUSH", "q", b"1", b"2", b"3"), ("PEXPIRE", "q", 1000)]
    assert regroup(batch, spans, [7, 1]) == [[5, 1], [6, 1], [7, 1]]


def test_a_script_between_pushes_keeps_them_apart() -> None:
    batch = [push("q", b"1"), (SCRIPT, ["k"], [1], None), push("q", b"2")]
    commands, _ = assemble(batch)
    assert [c[0] for c in commands] == ["RPUSH", "PEXPIRE", "EVALSHA", "RPUSH", "PEXPIRE"]


def test_an_error_reply_is_the_result_of_its_push() -> None:
    batch = [push("q", b"1"), push("q", b"2")]
    _, spans = assemble(batch)
    error = ValueError("WRONGTYPE")
    assert regroup(batch, spans, [error, 1]) == [error, error]
