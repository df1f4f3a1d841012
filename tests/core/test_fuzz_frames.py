"""Fuzzing the receive path: stored bytes -> MessageSerializer.deserialize -> decode_frame.

Whatever a party with Redis access puts in a key, the receiver may only raise the documented
errors (``BadMessage`` from the layer, ``FrameError`` from the protocol), which its caller logs
and drops; anything else would kill a reader task or a connection.

Counted inputs (asserted below, so the numbers cannot silently shrink):

- a seeded loop of 100,000 inputs through a plain and an encrypted serializer: random bytes,
  valid frames mutated byte-wise (flips, truncation, insertion, splicing) and valid frames
  mutated field-wise (a field replaced by a random msgpack value, removed, or added);
- two hypothesis tests (2,000 and 300 examples) for structured inputs hypothesis shrinks.

Together 102,300 inputs in a few seconds: the loop is cheap by design (no hypothesis
overhead per input), hypothesis adds shrinking on the kinds of input that are hard to hit at random.
"""

from __future__ import annotations

import random
import time
from typing import Any, get_args

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    decode_frame,
    encode,
)
from distributed_asgi.layers.serialization import BadMessage, MessageSerializer

SEED = 20261201
LOOP_INPUTS = 100_000
KEY = "fuzz-key-" + "k" * 32

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/fuzz",
    "raw_path": b"/fuzz",
    "query_string": b"a=1",
    "root_path": "",
    "headers": [(b"host", b"example"), (b"content-length", b"3")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}
WS_SCOPE = {**SCOPE, "type": "websocket", "scheme": "ws", "subprotocols": ["chat"]}

FRAME_VALUES: list[Frame] = [
    Connect("c1", SCOPE, "edge.a!b", 1e12, 2.0, [{"type": "http.request", "body": b"abc"}]),
    Connect("c2", WS_SCOPE, "edge.a!c", 1e12, 2.0, [{"type": "websocket.connect"}]),
    Accept("c1", "node.x!y", 2.0, [{"type": "http.response.start", "status": 200}]),
    Accept("c1", "node.x!y", 2.0),
    Asgi("c1", [{"type": "http.response.body", "body": b"ok", "more_body": False}]),
    Heartbeat("c1"),
    Credit("c1", 3),
    Alive("node.x!1"),
    Alive("node.x!1", 2, ("c1",)),
    Accept("c1", "node.x!y", 2.0, peer="node.x!1"),
    End("c1", "ValueError: boom"),
    End("c1"),
]
VALID_FRAMES: list[dict[str, Any]] = [encode(frame) for frame in FRAME_VALUES]


def receive_path(serializer: MessageSerializer, data: bytes) -> str:
    """What a receiver does with stored bytes; returns which outcome it had."""
    try:
        message = serializer.deserialize(data)
    except BadMessage:
        return "bad message"
    try:
        decode_frame(message)
    except FrameError:
        return "bad frame"
    return "frame"


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value, nested a little."""
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randrange(-1000, 1000)])
    if choice == 3:
        return rng.choice([0.0, -1.0, 1e300, float("inf"), float("-inf"), float("nan"), 2.5])
    if choice == 4:
        return rng.choice(["", "http", "websocket", "connect", "asgi", "x" * rng.randrange(50)])
    if choice == 5:
        return rng.randbytes(rng.randrange(20))
    if choice == 6:
        return rng.choice(["v", "t", "id", "m", "scope", "type", "headers", "hb"])
    if choice == 7:
        return {"type": rng.choice(["http.request", "websocket.send", 3, None])}
    if choice in (8, 9):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["v", "t", "id", "type", "path", "m", "k"]): random_value(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


def mutate_fields(rng: random.Random, frame: dict[str, Any]) -> dict[str, Any]:
    """A deep-ish copy of ``frame`` with one field (maybe inside the scope) changed."""
    frame = dict(frame)
    target = frame
    if "scope" in frame and rng.random() < 0.5:
        target = frame["scope"] = dict(frame["scope"])
    key = rng.choice([*target.keys(), "extra"])
    action = rng.randrange(3)
    if action == 0:
        target.pop(key, None)
    else:
        target[key] = random_value(rng)
    return frame


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(5)
        position = rng.randrange(len(buffer) + 1)
        if action == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif action == 1:
            del buffer[position:]
        elif action == 2:
            buffer[position:position] = rng.randbytes(rng.randrange(1, 9))
        elif action == 3 and buffer:
            del buffer[position : position + rng.randrange(1, 9)]
        else:
            buffer[position:position] = bytes([rng.choice([0xC1, 0xDD, 0xDF, 0xC6, 0xFF])])
    return bytes(buffer)


def test_seeded_loop_over_random_and_mutated_inputs() -> None:
    rng = random.Random(SEED)
    plain, encrypted = MessageSerializer(), MessageSerializer([KEY])
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    for index in range(LOOP_INPUTS):
        kind = index % 6
        serializer = encrypted if kind == 5 else plain
        frame = rng.choice(VALID_FRAMES)
        if kind == 0:
            data = rng.choice([b"M", b"F", b""]) + rng.randbytes(rng.randrange(64))
        elif kind in (1, 2):
            data = mutate_bytes(rng, plain.serialize(frame))
        elif kind in (3, 4):
            data = plain.serialize(mutate_fields(rng, frame))
        else:
            data = mutate_bytes(rng, encrypted.serialize(frame))
        outcome = receive_path(serializer, data)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    elapsed = time.monotonic() - started
    assert sum(outcomes.values()) == LOOP_INPUTS
    # The loop must exercise every outcome, or it tests less than it claims to.
    assert outcomes["bad message"] > 10_000, outcomes
    assert outcomes["bad frame"] > 10_000, outcomes
    assert outcomes["frame"] > 1_000, outcomes
    assert elapsed < 30, f"fuzz loop took {elapsed:.1f}s"


def test_every_valid_frame_survives_the_receive_path() -> None:
    for serializer in (MessageSerializer(), MessageSerializer([KEY])):
        for frame in VALID_FRAMES:
            assert receive_path(serializer, serializer.serialize(frame)) == "frame"


def test_every_frame_kind_round_trips_through_the_serializer_as_a_value() -> None:
    assert {type(frame) for frame in FRAME_VALUES} == set(get_args(Frame))
    for serializer in (MessageSerializer(), MessageSerializer([KEY])):
        for frame in FRAME_VALUES:
            stored = serializer.serialize(encode(frame))
            assert decode_frame(serializer.deserialize(stored)) == frame


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_hypothesis_random_bytes(data: bytes) -> None:
    for prefix in (b"", b"M", b"F"):
        receive_path(MessageSerializer(), prefix + data)
    receive_path(MessageSerializer([KEY]), b"F" + data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(VALID_FRAMES),
    st.dictionaries(
        st.sampled_from(["v", "t", "id", "m", "scope", "hb", "deadline"]), msgpack_values
    ),
)
def test_hypothesis_frames_with_fields_replaced(
    frame: dict[str, Any], changes: dict[str, Any]
) -> None:
    data = b"M" + msgpack.packb({**frame, **changes}, use_bin_type=True)
    receive_path(MessageSerializer(), data)
