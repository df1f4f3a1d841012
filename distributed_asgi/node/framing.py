"""An HTTP response on its way to the edge, cut into ``asgi`` frames.

Rules of this file:

- ``http.response.start`` is held for one loop turn (``hold``): a body sent right after it
  travels in the same frame, which saves a frame and a Redis write on most responses. If no
  body comes within the turn, the start goes out on its own, and the body after it.
- Bodies are cut into frames of at most ``MAX_BODY_FRAME``; a HEAD response's are emptied.
- Frames go out through the connection's ``send`` (ordered, flow-controlled), passed to each
  call rather than kept: a kept bound method would make every connection a reference cycle,
  left for the garbage collector (whose rare, large collections showed as a p99 of 110 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from distributed_asgi.core.types import Message

__all__ = ["MAX_BODY_FRAME", "ResponseFraming"]

Send = Callable[[list[Message]], Awaitable[None]]  # the connection's ordered frame send

# Response bodies are cut into frames of at most this size, so a slow client holds at most
# capacity x this much in Redis and no single Redis value grows with the response.
MAX_BODY_FRAME = 128 * 1024


class ResponseFraming:
    __slots__ = ("_flushing", "_is_head", "_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, is_head: bool) -> None:
        self._loop = loop
        self._is_head = is_head
        self._pending: Message | None = None  # the held start
        self._flushing: asyncio.Task[None] | None = None  # the start going out on its own

    @property
    def idle(self) -> bool:
        """Nothing held, nothing on its way."""
        return self._pending is None and self._flushing is None

    def hold(self, start: Message, send: Send) -> None:
        self._pending = start
        self._loop.call_soon(self._schedule_flush, send)

    async def body(self, message: Message, send: Send) -> None:
        body = b"" if self._is_head else bytes(message.get("body", b""))
        more_body = bool(message.get("more_body", False))
        size = len(body)
        if size <= MAX_BODY_FRAME:  # one frame (most bodies), without slicing
            await self._frame(body, more_body, send)
            return
        for at in range(0, size, MAX_BODY_FRAME):
            end = at + MAX_BODY_FRAME
            await self._frame(body[at:end], more_body or end < size, send)

    async def flush(self, send: Send) -> None:
        """Send what is held, and wait for the start on its way."""
        if self._pending is not None:
            await self._send_pending(send)
        if self._flushing is not None:
            await self._flushing

    def _frame(self, body: bytes, more_body: bool, send: Send) -> Awaitable[None]:
        """One frame of the body, with the held ``http.response.start`` when it still waits."""
        part = {"type": "http.response.body", "body": body, "more_body": more_body}
        start, self._pending = self._pending, None
        messages = [part] if start is None else [start, part]
        if self._flushing is not None:
            return self._after_flush(messages, send)
        return send(messages)

    async def _after_flush(self, messages: list[Message], send: Send) -> None:
        assert self._flushing is not None
        await self._flushing  # the start went out on its own: after it
        await send(messages)

    def _schedule_flush(self, send: Send) -> None:
        if self._pending is not None and self._flushing is None:
            self._flushing = self._loop.create_task(self._send_pending(send))

    async def _send_pending(self, send: Send) -> None:
        start, self._pending = self._pending, None
        if start is not None:
            await send([start])
