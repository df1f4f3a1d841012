"""The layer's RESP packer against redis-py's own: the same bytes for every argument type."""

from __future__ import annotations

from typing import Any

import pytest
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from distributed_asgi.layers import connection
from distributed_asgi.layers.connection import pack_commands


def _redis_py(commands: list[tuple[Any, ...]]) -> bytes:
    encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
    # A buffer cutoff above every argument here: redis-py then joins each command into one.
    serializer = PythonRespSerializer(1 << 30, encoder.encode)
    packed = [serializer.pack(*command) for command in commands]  # type: ignore[no-untyped-call]
    return b"".join(b"".join(parts) for parts in packed)


COMMANDS: list[tuple[Any, ...]] = [
    ("RPUSH", "asgi:q:edge.abc!", b"entry-1", b"entry-2"),
    ("PEXPIRE", "asgi:q:edge.abc!", 86_400_000),
    ("SET", "asgi:c:edge.abc!x1", "node 3 5.0 node.def!ghi é", "NX", "PX", 15_000),
    ("EVALSHA", "0" * 40, 1, "k", 1.5, -2),
    ("RPUSH", "big", b"x" * 10_000, "y" * 5_000),
]


def test_packs_as_redis_py_does() -> None:
    assert pack_commands(COMMANDS) == _redis_py(COMMANDS)


def test_packs_the_same_when_its_strs_come_again() -> None:
    first = pack_commands(COMMANDS)
    assert pack_commands(COMMANDS) == first


def test_keeps_short_strs_only_and_a_bounded_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "_PACKED_STRS", {})
    monkeypatch.setattr(connection, "_PACKED_STRS_KEPT", 3)
    pack_commands([("GET", "a" * 300)])
    assert list(connection._PACKED_STRS) == ["GET"]  # a long str is not kept
    commands = [("SET", f"k{n}", "v") for n in range(5)]
    assert pack_commands(commands) == _redis_py(commands)
    assert len(connection._PACKED_STRS) <= 3


def test_refuses_a_type_redis_has_no_form_for() -> None:
    with pytest.raises(TypeError, match="cannot send NoneType to Redis"):
        pack_commands([("SET", "k", None)])
    with pytest.raises(TypeError, match="cannot send bool to Redis"):
        pack_commands([("SET", "k", True)])
