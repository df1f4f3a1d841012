"""One ASGI 3 app with a small handler per test, dispatched on the path.

Handlers that must report something the client cannot see (a disconnect, a close code) write a
marker file into ``$MARKER_DIR``.
"""

from __future__ import annotations

import asyncio
import hashlib
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


def query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def respond(send: Send, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def json_response(send: Send, data: object) -> None:
    await respond(send, 200, json.dumps(data).encode(), [(b"content-type", b"application/json")])


async def scope_view(scope: Scope, receive: Receive, send: Send) -> None:
    def text(value: object) -> object:
        return value.decode("latin-1") if isinstance(value, bytes) else value

    await json_response(
        send,
        {
            "type": scope["type"],
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": text(scope["raw_path"]),
            "raw_path_is_bytes": isinstance(scope["raw_path"], bytes),
            "query_string": text(scope["query_string"]),
            "query_string_is_bytes": isinstance(scope["query_string"], bytes),
            "headers": [[text(k), text(v)] for k, v in scope["headers"]],
            "headers_are_byte_tuples": all(
                isinstance(h, tuple) and all(isinstance(x, bytes) for x in h)
                for h in scope["headers"]
            ),
            "root_path": scope["root_path"],
            "client": list(scope["client"]),
            "client_is_tuple": isinstance(scope["client"], tuple),
            "server": list(scope["server"]),
            "scheme": scope["scheme"],
            "http_version": scope["http_version"],
            "asgi": scope["asgi"],
            "extensions": sorted(scope.get("extensions") or {}),
            "state": scope.get("state"),
        },
    )


async def upload(scope: Scope, receive: Receive, send: Send) -> None:
    digest = hashlib.sha256()
    sizes = []
    more_body = True
    while more_body:
        message = await receive()
        assert message["type"] == "http.request", message
        digest.update(message["body"])
        sizes.append(len(message["body"]))
        more_body = message.get("more_body", False)
    await json_response(
        send, {"sha256": digest.hexdigest(), "length": sum(sizes), "chunks": len(sizes)}
    )


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


async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    count = int(query(scope).get("n", "5"))
    delay = float(query(scope).get("delay", "0.2"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for index in range(count):
        await send(
            {"type": "http.response.body", "body": f"chunk-{index}\n".encode(), "more_body": True}
        )
        await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b"end\n"})


async def cookies(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [
        (b"x-first", b"1"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"x-middle", b"2"),
        (b"set-cookie", b"b=2; HttpOnly"),
        (b"set-cookie", b"c=3"),
        (b"content-type", b"text/plain"),
    ]
    await respond(send, 299, b"cookies", headers)


async def empty(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def not_modified(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"x"')]})
    await send({"type": "http.response.body", "body": b""})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    body = b"hello, world"
    await respond(send, 200, body, [(b"content-length", str(len(body)).encode())])


async def endless(scope: Scope, receive: Receive, send: Send) -> None:
    """Streams until the client goes, then reports what receive() said."""
    name = query(scope)["marker"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    waiting = asyncio.ensure_future(receive())
    while True:
        while not waiting.done():
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await asyncio.sleep(0.02)
        message = waiting.result()
        if message["type"] == "http.disconnect":
            marker(name, message["type"])
            return
        waiting = asyncio.ensure_future(receive())


async def error_before(scope: Scope, receive: Receive, send: Send) -> None:
    raise ValueError("boom before the response")


async def error_after(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    await asyncio.sleep(0.1)
    raise ValueError("boom after the response started")


async def pid(scope: Scope, receive: Receive, send: Send) -> None:
    seconds = float(query(scope).get("sleep", "0"))
    if seconds:
        name = query(scope).get("marker")
        if name:
            marker(name, "started")
        await asyncio.sleep(seconds)
    await json_response(send, {"pid": os.getpid()})


async def slow(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers after ``sleep`` seconds unless the client goes first (then marks what it heard)."""
    seconds = float(query(scope).get("sleep", "0"))
    name = query(scope)["marker"]
    if (await receive())["type"] == "http.disconnect":  # the (empty) request body comes first
        marker(name, "http.disconnect")
        return
    try:
        message = await asyncio.wait_for(receive(), seconds)
    except asyncio.TimeoutError:
        await respond(send, 200, b"slow answer")
        return
    marker(name, message["type"])


HTTP_ROUTES: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
    "/scope": scope_view,
    "/upload": upload,
    "/echo": echo,
    "/stream": stream,
    "/cookies": cookies,
    "/empty": empty,
    "/not-modified": not_modified,
    "/hello": hello,
    "/endless": endless,
    "/error-before": error_before,
    "/error-after": error_after,
    "/pid": pid,
    "/slow": slow,
    "/big": big,
    "/slow-upload": slow_upload,
}


async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect", message
    if path == "/ws-deny":
        await send({"type": "websocket.close"})
        return
    if path == "/ws-deny-response":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 418,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no websockets here"})
        return
    offered = scope["subprotocols"]
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": offered[-1] if offered else None,
            "headers": [(b"x-accepted", b"yes")],
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            marker(query(scope).get("marker", "ws-disconnect"), str(message["code"]))
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
            return
        if text == "scope":
            await send(
                {
                    "type": "websocket.send",
                    "text": json.dumps(
                        {"subprotocols": scope["subprotocols"], "state": scope.get("state")}
                    ),
                }
            )
        elif text is not None:
            await send({"type": "websocket.send", "text": "echo:" + text})
        else:
            await send({"type": "websocket.send", "bytes": b"echo:" + message["bytes"]})


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["started_by"] = "lifespan"
            scope["state"]["pid"] = os.getpid()
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
