"""Scopes across the wire: what may cross, and the scope an application sees on the Node.

Pure: no I/O. Tuples become lists on the way out (``scope_to_wire``) and tuples again on the
way in (``scope_from_wire``, which validates everything and raises ``FrameError``), so an
application sees what uvicorn would give it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from distributed_asgi.core.errors import FrameError

__all__ = ["SUPPORTED_EXTENSIONS", "describe", "scope_from_wire", "scope_to_wire"]

# Scope extensions every hop can honour. Others (trailers, server push, zero-copy or path
# sends, early hints) need the edge server to act on something only the Node has, so they are
# not advertised to the application even when the edge server offers them.
SUPPORTED_EXTENSIONS = frozenset({"websocket.http.response", "tls"})

# Scope keys that cannot cross: the edge's lifespan state is not the Node's, and extensions are
# re-advertised from SUPPORTED_EXTENSIONS.
_LOCAL_SCOPE_KEYS = frozenset({"state", "extensions", "app"})
_SCOPE_TYPES = frozenset({"http", "websocket"})


def scope_to_wire(scope: Mapping[str, Any]) -> dict[str, Any]:
    """A msgpack-safe copy of an http or websocket scope, for the Node to rebuild."""
    wire = {key: value for key, value in scope.items() if key not in _LOCAL_SCOPE_KEYS}
    wire["headers"] = [[name, value] for name, value in scope.get("headers", ())]
    for key in ("client", "server"):
        address = scope.get(key)
        wire[key] = None if address is None else _wire_address(address)
    if "subprotocols" in scope:
        wire["subprotocols"] = list(scope["subprotocols"])
    offered = scope.get("extensions") or {}
    kept = {name: offered[name] for name in SUPPORTED_EXTENSIONS if name in offered}
    if kept:
        wire["extensions"] = kept
    return wire


def _wire_address(address: Any) -> list[Any]:
    """``[host, port]``; a port given as a string of digits (granian 2.8 does) becomes the
    ``int`` ASGI specifies, which a Node requires."""
    host, port = address
    if isinstance(port, str):
        port = int(port) if port.isdigit() else None
    return [host, port]


def scope_from_wire(wire: object) -> dict[str, Any]:
    """The scope an application sees, validated; ``FrameError`` if it is malformed."""
    # Every request's connect carries one: the shape an edge sends is checked at less cost,
    # anything else (or anything wrong) by the full check.
    scope = _usual_scope(wire) if type(wire) is dict else None
    return scope if scope is not None else _checked_scope(wire)


def _usual_scope(wire: dict[str, Any]) -> dict[str, Any] | None:
    """What ``_checked_scope`` gives for ``wire`` when every field has the exact type an edge
    sends (str, bytes, list, dict, int); None leaves the rest to it (including every error)."""
    get = wire.get
    kind = get("type")
    if type(kind) is not str or kind not in _SCOPE_TYPES or type(get("path")) is not str:
        return None
    for key in _STR_FIELDS:
        if type(get(key, "")) is not str:
            return None
    raw_path = get("raw_path")
    if raw_path is not None and type(raw_path) is not bytes:
        return None
    if type(get("query_string", b"")) is not bytes:
        return None
    if type(get("asgi", _NO_DICT)) is not dict or type(get("extensions", _NO_DICT)) is not dict:
        return None
    headers = get("headers", [])
    if type(headers) is not list:
        return None
    pairs: list[tuple[bytes, bytes]] = []
    for header in headers:
        if type(header) is not list or len(header) != 2:
            return None
        name, value = header
        if type(name) is not bytes or type(value) is not bytes:
            return None
        pairs.append((name, value))
    client, server = _usual_address(get("client")), _usual_address(get("server"))
    if client is False or server is False:
        return None
    if kind == "websocket":
        subprotocols = get("subprotocols", [])
        if type(subprotocols) is not list or any(type(s) is not str for s in subprotocols):
            return None
    scope = dict(wire)
    scope["headers"] = pairs
    scope["client"] = client
    scope["server"] = server
    return scope


_STR_FIELDS = ("http_version", "method", "scheme", "root_path")
_NO_DICT: dict[str, Any] = {}


def _usual_address(address: object) -> tuple[str, int | None] | Literal[False] | None:
    """``(host, port)`` of a ``[str, int | None]`` address, None for None, else False (left to
    the full check)."""
    if address is None:
        return None
    if type(address) is not list or len(address) != 2:
        return False
    host, port = address
    if type(host) is not str or (port is not None and type(port) is not int):
        return False
    return host, port


def _checked_scope(wire: object) -> dict[str, Any]:
    """``scope_from_wire``'s full check: every field, every error named."""
    if not isinstance(wire, dict):
        raise FrameError(f"scope must be a dict, got {type(wire).__name__}")
    kind = wire.get("type")
    # isinstance first: an unhashable value (a forged dict or list) would make ``in`` raise.
    if not isinstance(kind, str) or kind not in _SCOPE_TYPES:
        raise FrameError(f"scope type must be 'http' or 'websocket', got {kind!r}")
    scope = dict(wire)
    for key, expected in _SCOPE_FIELDS:
        if key in scope and not isinstance(scope[key], expected):
            raise FrameError(f"scope[{key!r}] must be {_type_names(expected)}, got {scope[key]!r}")
    if not isinstance(scope.get("path"), str):
        raise FrameError(f"scope['path'] must be a str, got {scope.get('path')!r}")
    headers = scope.get("headers", [])
    if not isinstance(headers, list):
        raise FrameError("scope['headers'] must be a list of [name, value] pairs")
    pairs: list[tuple[bytes, bytes]] = []
    for header in headers:
        if (
            not isinstance(header, list)
            or len(header) != 2
            or not isinstance(header[0], bytes)
            or not isinstance(header[1], bytes)
        ):
            raise FrameError(f"scope header must be a [bytes, bytes] pair, got {header!r}")
        pairs.append((header[0], header[1]))
    scope["headers"] = pairs
    for key in ("client", "server"):
        scope[key] = _address(scope.get(key), key)
    if kind == "websocket":
        subprotocols = scope.get("subprotocols", [])
        if not isinstance(subprotocols, list) or not all(isinstance(s, str) for s in subprotocols):
            raise FrameError(f"scope['subprotocols'] must be a list of str, got {subprotocols!r}")
    return scope


_SCOPE_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("asgi", dict),
    ("http_version", str),
    ("method", str),
    ("scheme", str),
    ("root_path", str),
    ("raw_path", (bytes, type(None))),
    ("query_string", bytes),
    ("extensions", dict),
)


def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def _address(value: object, key: str) -> tuple[str, int | None] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and (value[1] is None or isinstance(value[1], int))
    ):
        return (value[0], value[1])
    raise FrameError(f"scope[{key!r}] must be a [host, port] pair or None, got {value!r}")


def describe(scope: Mapping[str, Any]) -> str:
    """``GET /path`` or ``WebSocket /path``: a connection as the logs name it."""
    kind = "WebSocket" if scope.get("type") == "websocket" else scope.get("method", "HTTP")
    return f"{kind} {scope.get('path', '?')}"
