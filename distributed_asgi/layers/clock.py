"""``ServerClock``: each Redis server's time, as this process can tell it without asking.

Queue entries carry their send time by the server's clock (keys.py), so a message's expiry does
not depend on the clock of the machine that sent it. A script reads ``TIME`` itself; the plain
commands of ``push()`` and of ``send()`` to a normal channel cannot, so the layer stamps them
with this machine's clock plus the server's offset from it:

- The offset of a place is learned with one ``TIME`` call the first time the place is written
  to (``sync``), the middle of the round trip taken as the moment the server read its clock.
- Once it is ``CHECK_EVERY`` seconds old, the next write carries a ``TIME`` of its own
  (``due``), and its reply renews the offset (``heard``): no round trip of its own.
- The error is half a round trip plus the drift between two checks: milliseconds, against an
  expiry of seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["CHECK_EVERY", "ServerClock"]

# Seconds an offset is used before a write checks it again.
CHECK_EVERY = 30.0


class ServerClock:
    """The offsets of the servers of a layer's places; ``ask(place)`` runs ``TIME`` there."""

    __slots__ = ("_ask", "_offsets")

    def __init__(self, ask: Callable[[int], Awaitable[Any]]) -> None:
        self._ask = ask
        # place -> (the server's clock minus this machine's, in seconds; monotonic time of it)
        self._offsets: dict[int, tuple[float, float]] = {}

    def now_ms(self, place: int) -> int | None:
        """The server's time in ms by the offset in hand; None when it is not known yet."""
        known = self._offsets.get(place)
        if known is None:
            return None
        return int((time.time() + known[0]) * 1000)

    def due(self, place: int) -> bool:
        """Whether the offset of ``place`` is old enough for the next write to check it."""
        known = self._offsets.get(place)
        return known is None or time.monotonic() - known[1] >= CHECK_EVERY

    async def sync(self, place: int) -> int:
        """Learn the offset of ``place`` (one ``TIME``); the server's time in ms."""
        asked = time.time()
        reply = await self._ask(place)
        self.heard(place, reply, asked)
        return int((time.time() + self._offsets[place][0]) * 1000)

    def heard(self, place: int, reply: Sequence[Any], asked: float) -> None:
        """``TIME``'s reply (seconds, microseconds), asked at ``asked`` (this machine's clock)."""
        server = int(reply[0]) + int(reply[1]) / 1_000_000
        offset = server - (asked + time.time()) / 2
        self._offsets[place] = (offset, time.monotonic())
