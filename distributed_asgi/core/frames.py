"""Wire frames between the edge and the Nodes. Pure: no I/O, no clocks, no randomness.

Rules of this file:

- On the wire a frame is a dict the channel layer carries as msgpack: only dict, list, str,
  bytes, int, float, bool and None inside. Every frame has ``"v": 1`` (the version) and
  ``"t"`` (its kind).
- A frame is a value (``Connect``, ``Accept``, ``Asgi``, ``Credit``, ``Heartbeat``, ``Alive``,
  ``End``), never changed once made (plain slotted dataclasses, not frozen ones: a frozen
  dataclass costs about five times as much to make, and every request makes several), both ways:
  ``encode(frame)`` gives its wire dict; ``decode_frame`` is the one way back and validates
  everything the I/O layer relies on. Anything malformed raises ``FrameError`` with a message
  saying what was wrong; callers log it and drop the frame, never crash on it.
- Scopes cross the wire through ``scope_to_wire`` / ``scope_from_wire`` (core/scopes.py):
  tuples become lists on the way out and tuples again on the way in, as uvicorn gives them.

docs/PROTOCOL.md describes the frames and the conversation they make.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distributed_asgi.core.errors import FrameError
from distributed_asgi.core.messages import check_client_message, plain_message, plain_response_start
from distributed_asgi.core.names import require_valid_channel_name, valid_after_inbox
from distributed_asgi.core.scopes import (
    SUPPORTED_EXTENSIONS,
    describe,
    scope_from_wire,
    scope_to_wire,
)
from distributed_asgi.core.types import Message, Scope

__all__ = [
    "CREDIT_WINDOW",
    "FRAME_VERSION",
    "PICKUP_GRACE",
    "SUPPORTED_EXTENSIONS",
    "Accept",
    "Alive",
    "Asgi",
    "Connect",
    "Credit",
    "End",
    "Frame",
    "FrameError",
    "Heartbeat",
    "check_client_message",
    "decode_frame",
    "describe",
    "encode",
    "encode_accept",
    "encode_asgi",
    "plain_message",
    "plain_response_start",
    "scope_from_wire",
    "scope_to_wire",
]

FRAME_VERSION = 1

# A Node drops a connect frame once the deadline in it has passed, but an accept sent just
# before the deadline is still on its way: the edge listens this much longer, so that a Node
# that started the application is heard and nothing runs for a client already answered 503.
# (It also absorbs small clock differences between machines; keep their clocks in sync.)
PICKUP_GRACE = 0.5

# Flow control of a connection is end to end, not in Redis: each side may have this many
# ``asgi`` frames on their way to the other that it has not been given back as ``credit``. The
# receiver gives credit back as its application (at the Node) or its client (at the edge) has
# taken the frames, in steps of half the window, so a short exchange sends no credit at all.
CREDIT_WINDOW = 32


@dataclass(slots=True)
class Connect:
    """edge -> route channel: a new connection for whichever Node takes it."""

    conn_id: str
    scope: Scope
    reply_channel: str
    deadline: float
    heartbeat: float
    messages: list[Message] = field(default_factory=list)
    # The edge's liveness channel (``alive`` frames to it say the Node is alive); None from an
    # edge that heartbeats each connection instead.
    peer: str | None = None
    # The edge's alive round when it made this connection: its later rounds list it while the
    # edge holds it.
    round: int | None = None
    # The Node claims the connection in the layer before it starts the application and sends
    # the accept with its first frame (core/claims.py); False: an accept frame first.
    claim: bool = False


@dataclass(slots=True)
class Accept:
    """Node -> reply channel: this Node runs the connection; talk to ``channel`` from now on.

    ``messages`` are the application's first messages when the accept rides with them (a
    claimed connection, core/claims.py): one frame instead of two on short requests.
    """

    conn_id: str
    channel: str
    heartbeat: float
    messages: list[Message] = field(default_factory=list)
    # The Node's liveness channel; None from a Node that heartbeats each connection instead.
    peer: str | None = None
    # The Node's alive round when it took this connection (see Connect.round).
    round: int | None = None
    # The Node's id, as ``distributed-asgi status`` shows it (for the edge's logs).
    node: str | None = None


@dataclass(slots=True)
class Asgi:
    """Either way: ASGI messages of the connection, in order."""

    conn_id: str
    messages: list[Message]


@dataclass(slots=True)
class Credit:
    """Either way, on the connection's channel: the receiver has taken ``frames`` more of the
    sender's ``asgi`` frames, which the sender may now replace (see ``CREDIT_WINDOW``)."""

    conn_id: str
    frames: int


@dataclass(slots=True)
class Heartbeat:
    """Either way: the sender is alive and still has the connection."""

    conn_id: str


@dataclass(slots=True)
class Alive:
    """Either way, to the peer's liveness channel: the process behind ``sender`` (its own
    liveness channel) is alive. One per peer process and interval, whatever the number of
    connections between the two. ``held`` lists the ids of the connections the sender holds
    with the receiver (None: it does not say); ``round`` numbers the sender's rounds."""

    sender: str
    round: int = 0
    held: tuple[str, ...] | None = None


@dataclass(slots=True)
class End:
    """Node -> reply channel: the application instance finished before the connection did.

    ``error`` is ``"ExceptionType: text"`` when the application raised, else None.
    """

    conn_id: str
    error: str | None = None


Frame = Connect | Accept | Asgi | Credit | Heartbeat | Alive | End


# -- encoding ------------------------------------------------------------------------------------


def encode(frame: Frame) -> Message:
    """The wire form of ``frame``: what ``decode_frame`` turns back into an equal frame."""
    if isinstance(frame, Asgi):
        return encode_asgi(frame.conn_id, list(frame.messages))
    if isinstance(frame, Credit):
        return {"v": FRAME_VERSION, "t": "credit", "id": frame.conn_id, "n": frame.frames}
    if isinstance(frame, Heartbeat):
        return {"v": FRAME_VERSION, "t": "heartbeat", "id": frame.conn_id}
    if isinstance(frame, Alive):
        alive: Message = {"v": FRAME_VERSION, "t": "alive", "from": frame.sender, "n": frame.round}
        if frame.held is not None:
            alive["held"] = list(frame.held)
        return alive
    if isinstance(frame, Accept):
        return encode_accept(
            frame.conn_id,
            frame.channel,
            frame.heartbeat,
            list(frame.messages),
            frame.peer,
            frame.round,
            frame.node,
        )
    if isinstance(frame, End):
        return {"v": FRAME_VERSION, "t": "end", "id": frame.conn_id, "error": frame.error}
    connect: Message = {
        "v": FRAME_VERSION,
        "t": "connect",
        "id": frame.conn_id,
        "scope": scope_to_wire(frame.scope),
        "reply": frame.reply_channel,
        "deadline": frame.deadline,
        "hb": frame.heartbeat,
        "m": list(frame.messages),
    }
    if frame.peer is not None:
        connect["peer"] = frame.peer
    if frame.round is not None:
        connect["n"] = frame.round
    if frame.claim:
        connect["c"] = True
    return connect


# The frames of every request, encoded without making the frame object first (a frozen
# dataclass costs as much to make as its wire dict): ``encode(Asgi(...))`` and
# ``encode(Accept(...))`` are these.


def encode_asgi(conn_id: str, messages: list[Message]) -> Message:
    """The wire form of ``Asgi(conn_id, messages)`` (``messages`` is the frame's own list)."""
    return {"v": FRAME_VERSION, "t": "asgi", "id": conn_id, "m": messages}


def encode_accept(
    conn_id: str,
    channel: str,
    heartbeat: float,
    messages: list[Message] | None = None,
    peer: str | None = None,
    round: int | None = None,
    node: str | None = None,
) -> Message:
    """The wire form of ``Accept(conn_id, channel, heartbeat, messages or [], peer, round,
    node)``."""
    wire: Message = {
        "v": FRAME_VERSION,
        "t": "accept",
        "id": conn_id,
        "channel": channel,
        "hb": heartbeat,
    }
    if messages:
        wire["m"] = messages
    if peer is not None:
        wire["peer"] = peer
    if round is not None:
        wire["n"] = round
    if node is not None:
        wire["node"] = node
    return wire


# -- decoding ------------------------------------------------------------------------------------


def decode_frame(message: object) -> Frame:
    """The frame in ``message``; ``FrameError`` if it is not a valid version 1 frame."""
    if not isinstance(message, dict):
        raise FrameError(f"frame must be a dict, got {type(message).__name__}")
    version = message.get("v")
    if version != FRAME_VERSION:
        raise FrameError(f"unsupported frame version {version!r} (this side speaks 1)")
    kind = message.get("t")
    if kind == "alive":  # the one frame of a process, not of a connection: no id
        return Alive(_process_channel(message, "from"), _round(message) or 0, _held(message))
    conn_id = _str(message, "id")
    # The kinds of every request first: asgi both ways, connect at the Node, accept at the edge.
    if kind == "asgi":
        return Asgi(conn_id, _messages(message.get("m")))
    if kind == "connect":
        return _connect(message, conn_id)
    if kind == "accept":
        return Accept(
            conn_id,
            _process_channel(message, "channel"),
            _seconds(message, "hb"),
            _messages(message.get("m", [])),
            _peer(message),
            _round(message),
            _optional_str(message, "node"),
        )
    if kind == "credit":
        frames = _round(message)
        if not frames:
            raise FrameError(f"credit frame 'n' must be an int > 0, got {message.get('n')!r}")
        return Credit(conn_id, frames)
    if kind == "heartbeat":
        return Heartbeat(conn_id)
    if kind == "end":
        error = message.get("error")
        if error is not None and not isinstance(error, str):
            raise FrameError(f"end frame 'error' must be a str or None, got {error!r}")
        return End(conn_id, error)
    raise FrameError(f"unknown frame kind {kind!r}")


def _connect(message: Mapping[str, Any], conn_id: str) -> Connect:
    deadline = message.get("deadline")
    if type(deadline) is not float and (
        isinstance(deadline, bool) or not isinstance(deadline, (int, float))
    ):
        raise FrameError(f"connect frame 'deadline' must be a number, got {deadline!r}")
    if not math.isfinite(deadline):
        # NaN would never count as passed, so a Node would start a connection forever.
        raise FrameError(f"connect frame 'deadline' must be a number, got {deadline!r}")
    scope = scope_from_wire(message.get("scope"))
    first = _messages(message.get("m", []))
    scope_type = scope["type"]
    for item in first:
        check_client_message(scope_type, item)
    return Connect(
        conn_id,
        scope,
        _process_channel(message, "reply"),
        float(deadline),
        _seconds(message, "hb"),
        first,
        _peer(message),
        _round(message),
        message.get("c") is True,
    )


def _str(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise FrameError(f"frame field {key!r} must be a non-empty str, got {value!r}")
    return value


def _optional_str(message: Mapping[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise FrameError(f"frame field {key!r} must be a str, got {value!r}")
    return value


def _process_channel(message: Mapping[str, Any], key: str) -> str:
    """A process-specific channel name (``name!suffix``), as ``new_channel()`` makes them.

    Checked here rather than at the first send: a connect whose reply channel the layer would
    refuse must not start the application at all, and a forged frame must not make a Node or an
    edge write into a normal channel (a route channel, say) instead of a process's own.
    """
    value = message.get(key)
    # The usual name: the inbox part (``name!``) of a name that passed the full check before,
    # and a suffix of letters and digits (what the pattern's ``[\d\w\-_.]*`` takes), so a
    # process's names, one per connection, cost no pattern match after its first.
    if type(value) is str:
        bang = value.find("!")
        if bang > 0 and value[: bang + 1] in _CHECKED_INBOXES and valid_after_inbox(value, bang):
            return value
    value = _str(message, key)
    try:
        require_valid_channel_name(value)
    except TypeError as exc:
        raise FrameError(f"frame field {key!r}: {exc}") from None
    if "!" not in value:
        raise FrameError(f"frame field {key!r} must be a process-specific channel, got {value!r}")
    if len(_CHECKED_INBOXES) >= _INBOXES_KEPT:
        _CHECKED_INBOXES.clear()  # processes come and go: start over
    _CHECKED_INBOXES.add(value[: value.index("!") + 1])
    return value


# The inbox parts of process channels that passed the full check (see _process_channel): one
# per process this one has heard from, bounded.
_CHECKED_INBOXES: set[str] = set()
_INBOXES_KEPT = 1024


def _round(message: Mapping[str, Any]) -> int | None:
    value = message.get("n")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FrameError(f"frame field 'n' must be an int >= 0, got {value!r}")
    return value


def _held(message: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = message.get("held")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FrameError(f"frame field 'held' must be a list of str, got {value!r:.80}")
    return tuple(value)


def _peer(message: Mapping[str, Any]) -> str | None:
    """The optional liveness channel of a connect or accept (absent: per-connection beats)."""
    if message.get("peer") is None:
        return None
    return _process_channel(message, "peer")


def _seconds(message: Mapping[str, Any], key: str) -> float:
    value = message.get(key)
    if type(value) is float and 0 < value < math.inf:  # the usual case, without the rest
        return value
    # Finite: an infinite heartbeat interval would make the other side wait forever for a
    # peer that may be dead.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise FrameError(f"frame field {key!r} must be a positive number, got {value!r}")
    return float(value)


def _messages(value: object) -> list[Message]:
    if not isinstance(value, list):
        raise FrameError(f"frame field 'm' must be a list of ASGI messages, got {value!r}")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise FrameError(f"not an ASGI message (a dict with a str 'type'): {item!r}")
    return value
