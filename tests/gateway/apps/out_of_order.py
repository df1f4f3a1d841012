"""An application that sends ASGI messages out of order, served by uvicorn directly and behind
the gateway by the same test (test_out_of_order.py), which compares what each does.

``/raise/CASE`` lets the server's RuntimeError propagate (the server logs it and answers what it
answers); ``/catch/CASE`` catches it and reports its text (in the response where one can still be
sent, else in a marker file), so the two servers' error texts are compared word for word.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}


def marker(name: str, data: bytes) -> None:
    Path(os.environ["MARKER_DIR"], name).write_bytes(data)


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def body_before_start(send: Send) -> None:
    await send(body(b"too early"))


async def start_twice(send: Send) -> None:
    await send(START)
    await send(START)


async def after_complete(send: Send) -> None:
    await send(START)
    await send(body(b"done"))
    await send(body(b"too late"))


async def nothing(send: Send) -> None:
    return None


CASES: dict[str, Callable[[Send], Awaitable[None]]] = {
    "body-before-start": body_before_start,
    "start-twice": start_twice,
    "after-complete": after_complete,
    "nothing": nothing,
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    _, mode, case = scope["path"].split("/")
    if mode == "raise":
        await CASES[case](send)
        return
    try:
        await CASES[case](send)
    except RuntimeError as exc:
        text = str(exc).encode()
        if case == "body-before-start":
            await send(START)
            await send(body(text))
        elif case == "start-twice":
            await send(body(text))
        else:
            marker(case, text)
    else:
        raise AssertionError(f"{case}: the server accepted an out-of-order message")


async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    try:
        await send({"type": "websocket.send", "text": "before accept"})
    except RuntimeError as exc:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": str(exc)})
    await send({"type": "websocket.close", "code": 1000})
    try:
        await send({"type": "websocket.send", "text": "after close"})
    except RuntimeError as exc:
        marker("ws-after-close", str(exc).encode())
