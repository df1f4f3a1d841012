"""WebSocket denial responses (the ``websocket.http.response`` extension), in the shapes an
application may send them. The same app runs under uvicorn directly and behind the gateway.

- ``/deny``: start, then the whole body in one message.
- ``/deny-chunks``: start, then the body in three messages (``more_body``).
- ``/deny-empty``: start, then an empty final body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BODIES = {
    "/deny": [b"no websockets here"],
    "/deny-chunks": [b"first part, ", b"second part, ", b"last part"],
    "/deny-empty": [b""],
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return
    assert scope["type"] == "websocket", scope["type"]
    assert (await receive())["type"] == "websocket.connect"
    chunks = BODIES[scope["path"]]
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")],
        }
    )
    for index, chunk in enumerate(chunks):
        more = index < len(chunks) - 1
        await send({"type": "websocket.http.response.body", "body": chunk, "more_body": more})
