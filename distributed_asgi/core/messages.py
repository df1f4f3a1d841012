"""ASGI messages as frames carry them. Pure: no I/O.

- ``check_client_message``: what a server may pass to an application's ``receive()``, by scope
  type, with the fields an application may rely on; the Node hands the application only what
  uvicorn would (``FrameError`` otherwise).
- ``plain_response_start`` / ``plain_message``: msgpack-safe copies of what an application
  sends, with only the fields every hop honours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distributed_asgi.core.errors import FrameError
from distributed_asgi.core.types import Message

__all__ = ["check_client_message", "plain_message", "plain_response_start"]


# -- client messages -------------------------------------------------------------------------

# What a server passes to an application's receive(), by scope type, with the fields an
# application may rely on: (name, allowed types, required).
_CLIENT_MESSAGES: dict[str, dict[str, tuple[tuple[str, tuple[type, ...], bool], ...]]] = {
    "http": {
        "http.request": (("body", (bytes,), False), ("more_body", (bool,), False)),
        "http.disconnect": (),
    },
    "websocket": {
        "websocket.connect": (),
        "websocket.receive": (
            ("bytes", (bytes, type(None)), False),
            ("text", (str, type(None)), False),
        ),
        "websocket.disconnect": (("code", (int,), False), ("reason", (str, type(None)), False)),
    },
}


def check_client_message(scope_type: str, message: Mapping[str, Any]) -> None:
    """``FrameError`` unless ``message`` is one a server could pass to ``receive()`` for a
    ``scope_type`` connection: the Node hands the application only what uvicorn would."""
    kind = message.get("type")
    if kind == "http.request" and scope_type == "http":  # the usual message, checked inline
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if isinstance(body, bytes) and (more_body is False or more_body is True):
            return
    fields = _CLIENT_MESSAGES.get(scope_type, {}).get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise FrameError(f"{kind!r} is not a message an ASGI server sends to a {scope_type} app")
    for name, types, required in fields:
        if name not in message:
            if required:
                raise FrameError(f"{kind} message without {name!r}")
            continue
        value = message[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise FrameError(f"{kind} message field {name!r} has the wrong type: {value!r:.80}")
    if kind == "websocket.receive" and message.get("bytes") is None and message.get("text") is None:
        raise FrameError("websocket.receive message with neither 'bytes' nor 'text'")


# -- messages an application sends, as frames carry them --------------------------------------


def plain_response_start(message: Message) -> Message:
    """A msgpack-safe ``http.response.start`` with only the fields every hop honours."""
    start: Message = {
        "type": "http.response.start",
        "status": int(message["status"]),
        "headers": [[bytes(k), bytes(v)] for k, v in message.get("headers", ())],
    }
    if message.get("trailers"):
        start["trailers"] = True
    return start


def plain_message(message: Message) -> Message:
    """A msgpack-safe copy (headers as lists of bytes, bytearray as bytes)."""
    plain = dict(message)
    if "headers" in plain:
        plain["headers"] = [[bytes(k), bytes(v)] for k, v in plain["headers"]]
    for key in ("bytes", "body"):
        if isinstance(plain.get(key), (bytearray, memoryview)):
            plain[key] = bytes(plain[key])
    return plain
