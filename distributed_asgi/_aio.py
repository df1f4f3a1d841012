"""One asyncio helper shared by the edge and the Node."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Protocol

__all__ = ["receive_within"]


class _Receiver(Protocol):
    async def receive(self, channel: str) -> dict[str, Any]: ...


if sys.version_info >= (3, 11):

    async def receive_within(layer: _Receiver, channel: str, seconds: float) -> dict[str, Any]:
        """``layer.receive(channel)``, or ``TimeoutError`` after ``seconds``.

        ``asyncio.timeout`` rather than ``wait_for``: no extra task per message. A receive cut
        short loses nothing: the layer keeps what it popped for the next receive.
        """
        async with asyncio.timeout(seconds):
            return await layer.receive(channel)

else:  # pragma: no cover - Python 3.10

    async def receive_within(layer: _Receiver, channel: str, seconds: float) -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), seconds)
