"""One ASGI 3 app for the tests that run the Node as a process (signals, SIGKILL, memory,
outages), with a small handler per path; in-process tests write their own app inline.

Handlers that must report something the client cannot see (a disconnect, a close code) write a
marker file into ``$MARKER_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def marker(name: str, text: str) -> None:
    Path(os.environ["MARKER_DIR"], name).write_text(text)


def count_run(name: str) -> int:
    """Append this process's pid to the marker ``name``; the runs counted there so far."""
    path = Path(os.environ["MARKER_DIR"], name)
    with path.open("a") as file:  # one short write: whole lines, whoever appends
        file.write(f"{os.getpid()}\n")
    return len(path.read_text().splitlines())


def query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def respond(send: Send, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def json_response(send: Send, data: object) -> None:
    await respond(send, 200, json.dumps(data).encode(), [(b"content-type", b"application/json")])


async def big(scope: Scope, receive: Receive, send: Send) -> None:
    """``mb`` MiB of a repeating pattern in 64 KiB chunks, as fast as ``send()`` lets it;
    marks how far it got in ``sent-MARKER`` every MiB."""
    total = int(query(scope)["mb"]) * 1024 * 1024
    name = query(scope).get("marker", "big")
    chunk = bytes(range(256)) * 256
    await send({"type": "http.response.start", "status": 200, "headers": []})
    sent = 0
    while sent < total:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sent += len(chunk)
        if sent % (1024 * 1024) == 0:
            marker(f"sent-{name}", str(sent))
    await send({"type": "http.response.body", "body": b""})


async def slow_upload(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads one chunk, pauses ``pause`` seconds (marked), then reads the rest: a slow reader."""
    name = query(scope)["marker"]
    message = await receive()
    length = len(message["body"])
    marker(name, "paused")
    await asyncio.sleep(float(query(scope)["pause"]))
    while message.get("more_body", False):
        message = await receive()
        length += len(message["body"])
    await json_response(send, {"length": length})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    more_body = True
    while more_body:
        message = await receive()
        body += message["body"]
        more_body = message.get("more_body", False)
    await respond(send, 200, body)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    body = b"hello, world"
    await respond(send, 200, body, [(b"content-length", str(len(body)).encode())])


async def error_before(scope: Scope, receive: Receive, send: Send) -> None:
    raise ValueError("boom before the response")


async def pid(scope: Scope, receive: Receive, send: Send) -> None:
    seconds = float(query(scope).get("sleep", "0"))
    if seconds:
        name = query(scope).get("marker")
        if name:
            marker(name, "started")
        await asyncio.sleep(seconds)
    await json_response(send, {"pid": os.getpid()})


async def first_run_hangs(scope: Scope, receive: Receive, send: Send) -> None:
    """Counts its runs in the marker ``runs-<marker>`` (a line per run: this Node's pid); the
    first run hangs (``started=1``: after sending the response's start), later ones answer."""
    args = query(scope)
    runs = count_run(f"runs-{args['marker']}")
    body = (await receive()).get("body", b"")
    if runs > 1:
        await json_response(send, {"pid": os.getpid(), "body": body.decode()})
        return
    if args.get("started"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
    await asyncio.sleep(60)


HTTP_ROUTES: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
    "/echo": echo,
    "/hello": hello,
    "/error-before": error_before,
    "/pid": pid,
    "/first-run-hangs": first_run_hangs,
    "/big": big,
    "/slow-upload": slow_upload,
}


async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["type"] == "websocket.connect", message
    offered = scope["subprotocols"]
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": offered[-1] if offered else None,
            "headers": [(b"x-accepted", b"yes")],
        }
    )
    code = await ws_echo(receive, send)
    if code is not None:
        marker(query(scope).get("marker", "ws-disconnect"), str(code))


async def ws_echo(receive: Receive, send: Send) -> int | None:
    """Echoes text and bytes; "close:CODE" closes with CODE. Returns the client's disconnect
    code, or None when the app closed first (shared with the in-process WebSocket tests)."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return int(message["code"])
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
            return None
        if text is not None:
            await send({"type": "websocket.send", "text": "echo:" + text})
        else:
            await send({"type": "websocket.send", "bytes": b"echo:" + message["bytes"]})


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            marker(f"shutdown-{os.getpid()}", "done")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
    elif scope["type"] == "websocket":
        await websocket(scope, receive, send)
    else:
        handler = HTTP_ROUTES.get(scope["path"].removeprefix(scope.get("root_path", "")))
        if handler is None:
            await respond(send, 404, b"no such test handler")
        else:
            await handler(scope, receive, send)
