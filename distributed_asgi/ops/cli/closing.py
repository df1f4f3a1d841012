"""Closing open WebSockets when the edge's server starts shutting down, as uvicorn does.

uvicorn closes every WebSocket with 1012 (service restart) at SIGTERM and then waits only for
HTTP requests. hypercorn waits for WebSockets as for requests, until its graceful timeout, and
daphne cancels them without a close frame; ``ClosesWebSocketsOnShutdown`` around the
distributor lets their runners close them first: the client gets 1012, and the Node's
application a ``websocket.disconnect`` with 1012.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distributed_asgi.core.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SERVICE_RESTART", "ClosesWebSocketsOnShutdown"]

SERVICE_RESTART = 1012


class ClosesWebSocketsOnShutdown:
    """An ASGI app around ``app`` whose ``close_websockets()`` closes every accepted WebSocket."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._open: set[_ClosableSocket] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        socket = _ClosableSocket(receive, send)
        self._open.add(socket)
        try:
            await self.app(scope, socket.receive, socket.send)
        finally:
            self._open.discard(socket)
            socket.forget()

    async def close_websockets(
        self, code: int = SERVICE_RESTART, wait: float = 5.0, client_code: int | None = None
    ) -> None:
        """Close every accepted WebSocket: the application hears ``code``, the client gets
        ``client_code`` (``code`` when None); then give the application up to ``wait`` seconds
        to finish with them (the distributor tells each Node)."""
        sockets = list(self._open)
        sent = code if client_code is None else client_code
        closing = (s.close(code, sent) for s in sockets)
        await asyncio.gather(*closing, return_exceptions=True)
        finishing = [asyncio.ensure_future(s.finished.wait()) for s in sockets]
        if finishing:
            _, late = await asyncio.wait(finishing, timeout=wait)
            for task in late:
                task.cancel()


class _ClosableSocket:
    """One WebSocket's receive and send, which ``close()`` can end from outside."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._accepted = False
        self._closed_with: int | None = None
        self._shutdown = asyncio.Event()
        self.finished = asyncio.Event()
        # A receive still running when the close came is kept, never cancelled: a server's
        # receive() need not be safe to cancel.
        self._pending: asyncio.Future[Message] | None = None

    async def receive(self) -> Message:
        if self._closed_with is not None:
            return _disconnect(self._closed_with)
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._receive())
        shutdown: asyncio.Future[Any] = asyncio.ensure_future(self._shutdown.wait())
        waiting: set[asyncio.Future[Any]] = {self._pending, shutdown}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            shutdown.cancel()
        if self._pending.done():
            message, self._pending = self._pending.result(), None
            return message
        assert self._closed_with is not None
        return _disconnect(self._closed_with)

    async def send(self, message: Message) -> None:
        if self._closed_with is not None:
            return  # closed by the shutdown: the client is gone
        kind = message["type"]
        if kind == "websocket.accept":
            self._accepted = True
        elif kind == "websocket.close":
            self._accepted = False  # closed by the application itself
        await self._send(message)

    async def close(self, code: int, client_code: int) -> None:
        if not self._accepted or self._closed_with is not None:
            return  # still in its handshake, or closed already
        self._closed_with = code
        self._shutdown.set()
        closing = {"type": "websocket.close", "code": client_code, "reason": "server shutting down"}
        await self._send(closing)

    def forget(self) -> None:
        self.finished.set()
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()


def _disconnect(code: int) -> dict[str, Any]:
    return {"type": "websocket.disconnect", "code": code}
