"""A Starlette app with HTTP and WebSocket routes, served by workers through the gateway.

It is an ordinary Starlette app: nothing in it knows about Redis or the edge. Run it with

    distributed-asgi up examples.starlette_app.app:app --workers 2

Each response names the worker process that served it, so you can watch connections spread
over the workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>distributed-asgi</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>Served by worker $PID</h1>
<p>Reload to see which worker takes the next request. Try
<a href="/api/hello?name=you">/api/hello</a> and <a href="/api/stream">/api/stream</a>.</p>
<p><input id="msg" value="hello">
<button onclick="ws.send(msg.value)">send over WebSocket</button></p>
<pre id="log"></pre>
<script>
const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
ws.onmessage = (e) => { log.textContent += e.data + "\\n"; };
</script>
</body></html>
"""


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # Runs once per worker process, before it takes any connection.
    yield {"started_at": time.time()}


async def homepage(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE.replace("$PID", str(os.getpid())))


async def hello(request: Request) -> JSONResponse:
    name = request.query_params.get("name", "world")
    return JSONResponse(
        {
            "message": f"Hello, {name}!",
            "worker_pid": os.getpid(),
            "worker_up_for": round(time.time() - request.state.started_at, 3),
        }
    )


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(body, media_type=request.headers.get("content-type", "text/plain"))


async def stream(request: Request) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for n in range(1, 6):
            yield f"chunk {n}\n".encode()

    return StreamingResponse(numbers(), media_type="text/plain")


async def websocket_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(f"connected to worker {os.getpid()}")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(f"echo: {message['text']}")
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/api/hello", hello),
        Route("/api/echo", echo, methods=["POST"]),
        Route("/api/stream", stream),
        WebSocketRoute("/ws", websocket_echo),
    ],
    lifespan=lifespan,
)
