"""Applications more than one test of the edge serves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.gateway.harness import Receive, Scope, Send


def endless_app(heard: asyncio.Queue[str]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Streams 1 KiB chunks until told the client is gone, then puts what receive() said."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()  # the (empty) request body
        waiting = asyncio.ensure_future(receive())
        while not waiting.done():
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await asyncio.sleep(0.02)
        await heard.put(waiting.result()["type"])

    return app
