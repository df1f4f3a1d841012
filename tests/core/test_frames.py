"""Wire frames: round trips through msgpack, and validation of everything malformed."""

from __future__ import annotations

import contextlib
from typing import Any, get_args

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributed_asgi.core import scopes
from distributed_asgi.core.frames import (
    Accept,
    Alive,
    Asgi,
    Connect,
    Credit,
    End,
    Frame,
    FrameError,
    Heartbeat,
    check_client_message,
    decode_frame,
    encode,
    scope_from_wire,
    scope_to_wire,
)
from distributed_asgi.core.names import require_valid_channel_name

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 51000),
    "scheme": "http",
    "method": "POST",
    "root_path": "",
    "path": "/caf\u00e9",
    "raw_path": b"/caf%C3%A9",
    "query_string": b"a=1&a=2",
    "headers": [(b"host", b"x"), (b"set-cookie", b"1"), (b"set-cookie", b"2")],
    "state": {"edge": object()},
    "extensions": {"http.response.trailers": {}, "tls": {"tls_version": 772}},
}


def wire(frame: dict[str, Any]) -> dict[str, Any]:
    """What the channel layer does to a message: msgpack both ways."""
    result: dict[str, Any] = msgpack.unpackb(msgpack.packb(frame, use_bin_type=True), raw=False)
    return result


def test_connect_round_trip_restores_scope_types() -> None:
    first = {"type": "http.request", "body": b"abc", "more_body": True}
    frame = decode_frame(wire(encode(Connect("c1", SCOPE, "edge.x!y", 123.5, 2.0, [first]))))
    assert isinstance(frame, Connect)
    assert frame.reply_channel == "edge.x!y"
    assert frame.deadline == 123.5
    assert frame.messages == [first]
    scope = frame.scope
    assert scope["headers"] == SCOPE["headers"]
    assert all(isinstance(h, tuple) for h in scope["headers"])
    assert scope["client"] == ("127.0.0.1", 51000)
    assert scope["raw_path"] == b"/caf%C3%A9"
    assert "state" not in scope
    # Only extensions every hop supports are advertised.
    assert scope["extensions"] == {"tls": {"tls_version": 772}}


def canonical(scope: dict[str, Any]) -> dict[str, Any]:
    """``scope`` as a Node sees it (what crosses the wire, tuples restored)."""
    frame = decode_frame(wire(encode(Connect("c", scope, "edge.x!y", 1.0, 2.0))))
    assert isinstance(frame, Connect)
    return frame.scope


CANONICAL_SCOPE = canonical(SCOPE)
EVERY_KIND = [
    Connect(
        "c1", CANONICAL_SCOPE, "edge.x!y", 123.5, 2.0, [{"type": "http.request", "body": b"a"}]
    ),
    Connect("c1", CANONICAL_SCOPE, "edge.x!y", 123.5, 2.0),
    Connect("c1", CANONICAL_SCOPE, "edge.x!y", 123.5, 2.0, peer="edge.x!1"),
    Connect("c1", CANONICAL_SCOPE, "edge.x!y", 123.5, 2.0, peer="edge.x!1", round=7),
    Accept("c", "node.a!b", 2.0),
    Accept("c", "node.a!b", 2.0, peer="node.a!1"),
    Accept("c", "node.a!b", 2.0, peer="node.a!1", round=0),
    Accept("c", "node.a!b", 2.0, [{"type": "http.response.start", "status": 200, "headers": []}]),
    Asgi("c", [{"type": "websocket.send", "bytes": b"\x00\xff"}]),
    Asgi("c", []),
    Heartbeat("c"),
    Credit("c", 16),
    Alive("edge.x!1"),
    Alive("edge.x!1", 3, ("c1", "c2")),
    Alive("edge.x!1", 4, ()),
    End("c", "ValueError: x"),
    End("c"),
]


@pytest.mark.parametrize("frame", EVERY_KIND, ids=lambda f: type(f).__name__)
def test_every_frame_kind_round_trips_as_a_value(frame: Frame) -> None:
    assert decode_frame(wire(encode(frame))) == frame


def test_the_round_trip_covers_every_frame_kind() -> None:
    assert {type(frame) for frame in EVERY_KIND} == set(get_args(Frame))


def test_an_accept_without_messages_sends_no_message_list() -> None:
    assert "m" not in encode(Accept("c", "node.a!b", 2.0))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ([], "must be a dict"),
        ({"t": "asgi", "id": "c", "m": []}, "unsupported frame version None"),
        ({"v": 2, "t": "asgi", "id": "c", "m": []}, "unsupported frame version 2"),
        ({"v": 1, "t": "nope", "id": "c"}, "unknown frame kind 'nope'"),
        ({"v": 1, "t": "asgi", "m": []}, "'id' must be a non-empty str"),
        ({"v": 1, "t": "asgi", "id": "c", "m": [{"no": "type"}]}, "not an ASGI message"),
        ({"v": 1, "t": "accept", "id": "c", "channel": "n!x", "hb": -1}, "'hb' must be a positive"),
        ({"v": 1, "t": "end", "id": "c", "error": 3}, "'error' must be a str"),
        ({"v": 1, "t": "alive", "from": "e!1", "n": -1}, "'n' must be an int >= 0"),
        ({"v": 1, "t": "credit", "id": "c", "n": 0}, "credit frame 'n' must be an int > 0"),
        ({"v": 1, "t": "credit", "id": "c"}, "credit frame 'n' must be an int > 0"),
        ({"v": 1, "t": "alive", "from": "e!1", "n": True}, "'n' must be an int >= 0"),
        ({"v": 1, "t": "alive", "from": "e!1", "n": 1, "held": [1]}, "'held' must be a list"),
        ({"v": 1, "t": "alive", "from": "e!1", "n": 1, "held": "c1"}, "'held' must be a list"),
        (
            {"v": 1, "t": "accept", "id": "c", "channel": "a b!c", "hb": 1},
            "'channel': Channel name",
        ),
        ({"v": 1, "t": "accept", "id": "c", "channel": "route", "hb": 1}, "process-specific"),
        # Non-finite numbers: a NaN deadline never passes, an infinite heartbeat never misses.
        ({"v": 1, "t": "accept", "id": "c", "channel": "n!x", "hb": float("inf")}, "'hb' must be"),
        (
            {"v": 1, "t": "connect", "id": "c", "deadline": float("nan"), "hb": 1.0},
            "'deadline' must be a number",
        ),
    ],
)
def test_malformed_frames_raise_frame_error(frame: object, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_frame(frame)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "lifespan"}, "scope type"),
        ({"type": {}}, "scope type"),  # unhashable: found by tests/core/test_fuzz_frames.py
        ({"path": b"/"}, "scope\\['path'\\] must be a str"),
        ({"headers": [["a", "b"]]}, "header must be a \\[bytes, bytes\\] pair"),
        ({"client": ["h"]}, "scope\\['client'\\]"),
        ({"query_string": "a=1"}, "query_string"),
    ],
)
def test_malformed_scopes_raise_frame_error(change: dict[str, Any], message: str) -> None:
    frame = wire(encode(Connect("c", SCOPE, "edge.x!y", 1.0, 2.0)))
    frame["scope"].update(change)
    with pytest.raises(FrameError, match=message):
        decode_frame(frame)


def test_websocket_scope_keeps_subprotocols_and_denial_extension() -> None:
    scope = {
        **SCOPE,
        "type": "websocket",
        "subprotocols": ["a", "b"],
        "extensions": {"websocket.http.response": {}},
    }
    decoded = decode_frame(wire(encode(Connect("c", scope_to_wire(scope), "e!x", 1.0, 1.0))))
    assert isinstance(decoded, Connect)
    assert decoded.scope["subprotocols"] == ["a", "b"]
    assert decoded.scope["extensions"] == {"websocket.http.response": {}}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_decode_never_raises_anything_but_frame_error(value: object) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(value)


@given(
    st.dictionaries(
        st.sampled_from(
            ["v", "t", "id", "m", "scope", "reply", "deadline", "hb", "channel", "error"]
        ),
        st.none()
        | st.integers()
        | st.text()
        | st.binary()
        | st.lists(st.integers())
        | st.just(1)
        | st.sampled_from(["connect", "accept", "asgi", "end"]),
    )
)
def test_decode_of_near_frames_never_raises_anything_but_frame_error(value: dict[str, Any]) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(value)


@pytest.mark.parametrize(
    ("scope_type", "message"),
    [
        ("http", {"type": "http.request", "body": b"x", "more_body": True}),
        ("http", {"type": "http.request"}),
        ("http", {"type": "http.disconnect"}),
        ("websocket", {"type": "websocket.connect"}),
        ("websocket", {"type": "websocket.receive", "text": "hi"}),
        ("websocket", {"type": "websocket.receive", "bytes": b"hi", "text": None}),
        ("websocket", {"type": "websocket.disconnect", "code": 1006, "reason": ""}),
    ],
)
def test_client_messages_a_server_sends(scope_type: str, message: dict[str, Any]) -> None:
    check_client_message(scope_type, message)


@pytest.mark.parametrize(
    ("scope_type", "message", "error"),
    [
        ("http", {"type": "http.response.start", "status": 200}, "not a message an ASGI server"),
        ("http", {"type": "websocket.receive", "text": "x"}, "not a message an ASGI server"),
        ("http", {"type": "http.request", "body": "str"}, "'body' has the wrong type"),
        ("http", {"type": "http.request", "more_body": 1}, "'more_body' has the wrong type"),
        ("websocket", {"type": "websocket.receive"}, "neither 'bytes' nor 'text'"),
        ("websocket", {"type": "websocket.disconnect", "code": True}, "'code' has the wrong"),
        ("websocket", {"type": "websocket.send", "text": "x"}, "not a message an ASGI server"),
    ],
)
def test_client_messages_no_server_sends(
    scope_type: str, message: dict[str, Any], error: str
) -> None:
    with pytest.raises(FrameError, match=error):
        check_client_message(scope_type, message)


def test_a_connect_carries_only_client_messages_of_its_scope_type() -> None:
    frame = wire(encode(Connect("c", SCOPE, "edge.x!y", 1.0, 2.0, [{"type": "websocket.connect"}])))
    with pytest.raises(FrameError, match=r"'websocket\.connect' is not a message"):
        decode_frame(frame)


def test_ports_given_as_strings_cross_as_integers() -> None:
    """granian 2.8 gives the client's and server's ports as str; ASGI says int, and a Node
    refuses anything else."""
    scope = {
        "type": "http",
        "path": "/",
        "headers": [],
        "client": ("10.0.0.1", "50123"),
        "server": ("10.0.0.2", "8000"),
    }
    wire = scope_to_wire(scope)
    assert wire["client"] == ["10.0.0.1", 50123] and wire["server"] == ["10.0.0.2", 8000]
    assert scope_from_wire(wire)["client"] == ("10.0.0.1", 50123)
    assert scope_to_wire({**scope, "client": ("h", "")})["client"] == ["h", None]


# -- the fast paths of the per-request frames give what the full checks give ------------------

_SCOPE_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-2, 70000)
    | st.sampled_from(["", "/", "GET", "http", "1.1", "h", "websocket"])
    | st.binary(max_size=3)
    | st.lists(st.none() | st.text(max_size=2) | st.binary(max_size=2) | st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)


@given(
    st.dictionaries(
        st.sampled_from(sorted({*CANONICAL_SCOPE, "subprotocols"})), _SCOPE_VALUES, max_size=4
    ),
    st.sampled_from(["http", "websocket"]),
)
def test_the_usual_scope_check_agrees_with_the_full_one(change: dict[str, Any], kind: str) -> None:
    value = {**wire(scope_to_wire({**SCOPE, "type": kind})), **change}
    usual = scopes._usual_scope(value)
    try:
        checked: object = scopes._checked_scope(value)
    except FrameError:
        checked = FrameError
    # The fast check never passes what the full one refuses, and gives the same scope.
    assert usual is None or usual == checked
    if checked is not FrameError:
        assert scope_from_wire(value) == checked
    if not change:
        assert usual is not None  # the shape every edge sends takes the fast path


@pytest.mark.parametrize(
    "reply", ["edge.x!a!b", "edge.x!a b", "edge.x!" + "1" * 95, "edge.y!\n", "edge.x!-_.é2"]
)
def test_a_known_inbox_does_not_let_a_bad_name_through(reply: str) -> None:
    """The reply channel of a process heard before skips the pattern only when the full check
    would pass it too."""
    decode_frame(wire(encode(Connect("c", SCOPE, "edge.x!1", 1.0, 2.0))))  # edge.x! is known
    frame = wire(encode(Connect("c", SCOPE, reply, 1.0, 2.0)))
    try:
        require_valid_channel_name(reply)
    except TypeError:
        with pytest.raises(FrameError, match="'reply'"):
            decode_frame(frame)
    else:
        decoded = decode_frame(frame)
        assert isinstance(decoded, Connect) and decoded.reply_channel == reply
