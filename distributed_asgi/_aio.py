"""asyncio helpers shared by the edge and the Node."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

__all__ = ["DeadlineExceeded", "receive_within", "within"]

_T = TypeVar("_T")


class _Receiver(Protocol):
    async def receive(self, channel: str) -> dict[str, Any]: ...


class DeadlineExceeded(Exception):
    """A layer call did not finish within what a connection's budget left for it."""


if sys.version_info >= (3, 11):

    async def receive_within(layer: _Receiver, channel: str, seconds: float) -> dict[str, Any]:
        """``layer.receive(channel)``, or ``TimeoutError`` after ``seconds``.

        ``asyncio.timeout`` rather than ``wait_for``: no extra task per message. A receive cut
        short loses nothing: the layer keeps what it popped for the next receive.
        """
        async with asyncio.timeout(seconds):
            return await layer.receive(channel)

    async def within(seconds: float, awaitable: Awaitable[_T]) -> _T:
        """``await awaitable``, or ``DeadlineExceeded`` after ``seconds``; a timeout raised
        inside (the client library's own) passes through unchanged. A cancelled command's
        connection is discarded by the layer, never reused with its reply unread."""
        try:
            async with asyncio.timeout(max(0.0, seconds)) as scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise DeadlineExceeded from None
            raise

else:  # pragma: no cover - Python 3.10

    async def receive_within(layer: _Receiver, channel: str, seconds: float) -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), seconds)

    async def within(seconds: float, awaitable: Awaitable[_T]) -> _T:
        try:
            return await asyncio.wait_for(awaitable, max(0.0, seconds))
        except asyncio.TimeoutError:
            raise DeadlineExceeded from None
