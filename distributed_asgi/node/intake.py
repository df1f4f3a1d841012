"""The Node's intake: receives on the route channels, never more than the Node has room for.

Rules of this file:

- The room (free application slots) is kept out as receives, so a key's receives pop together
  (one Redis round pops as many as wait) and an idle Node takes a whole burst in one round.
  Work beyond the room stays in Redis for other Nodes.
- One receive per key while there is any room, so no key starves another; the rest of the
  room goes to the keys taking connects (every key when none is: a burst may come on any),
  fewest receives first.
- When a key takes a connect with the room used up, keys idle for ``IDLE_AFTER`` give back
  their receives beyond one, so a busy key is not held to its share by quiet ones.
- Receives are futures with done-callbacks rather than a wait loop: a finished receive hands
  its message on and refills, directly. A cancelled receive puts what it popped back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from distributed_asgi.core.types import Message
from distributed_asgi.layers import GatewayLayer

__all__ = ["IDLE_AFTER", "Intake"]

logger = logging.getLogger("distributed_asgi.node")

# A key that took no connect for this long is idle (see the rules above).
IDLE_AFTER = 1.0


class Intake:
    """Receives on ``keys``; each message goes to ``on_message(key, message)``.

    ``room()`` is how many more connections the Node may take now (0 when it is stopping).
    """

    def __init__(
        self,
        layer: GatewayLayer,
        keys: list[str],
        room: Callable[[], int],
        on_message: Callable[[str, Message], None],
    ) -> None:
        self.layer = layer
        self.keys = keys
        self.room = room
        self.on_message = on_message
        self._receives: dict[asyncio.Future[Message], str] = {}
        self._receiving = dict.fromkeys(keys, 0)  # key -> receives waiting on it
        self._last_taken = dict.fromkeys(keys, -IDLE_AFTER)  # key -> monotonic time

    def fill(self, taken_on: str | None = None) -> None:
        """Keep the room out as receives; ``taken_on`` is the key that just took one."""
        free = self.room()
        if free <= 0:
            return
        room = free - len(self._receives)
        if taken_on is not None and room <= 0 and len(self.keys) > 1:
            room += self._take_back_idle_receives(taken_on)
        counts = self._receiving
        for key in self.keys:
            if counts[key] == 0:
                self._receive(key)
                room -= 1
        if room <= 0:
            return
        keys = self.keys
        if len(keys) > 1:
            now = time.monotonic()
            keys = [key for key in keys if now - self._last_taken[key] < IDLE_AFTER] or keys
        while room > 0:
            self._receive(min(keys, key=counts.__getitem__))
            room -= 1

    def cancel(self) -> None:
        """Let go of every receive (each puts back what it popped)."""
        receives, self._receives = self._receives, {}
        self._receiving = dict.fromkeys(self.keys, 0)
        for future in receives:
            future.cancel()

    def _take_back_idle_receives(self, busy_key: str) -> int:
        """Cancel the receives of idle keys beyond one each; how many came back."""
        now = time.monotonic()
        freed = 0
        for key in self.keys:
            if key == busy_key or self._receiving[key] <= 1:
                continue
            if now - self._last_taken[key] < IDLE_AFTER:
                continue
            futures = [future for future, k in self._receives.items() if k == key]
            for future in futures:
                future.cancel()
                del self._receives[future]
            # All of the key's, then a new one: it runs after the cancelled ones, so it takes
            # first whatever their last round popped (a cancelled receive keeps that locally).
            self._receiving[key] = 0
            self._receive(key)
            freed += len(futures) - 1
        return freed

    def _receive(self, key: str) -> None:
        future = asyncio.get_running_loop().create_task(self.layer.receive(key))
        self._receives[future] = key
        self._receiving[key] += 1
        future.add_done_callback(functools.partial(self._received, key))

    def _received(self, key: str, future: asyncio.Future[Message]) -> None:
        if self._receives.pop(future, None) is not None:
            self._receiving[key] -= 1
        # else: cancel() already let go of it, but a receive that had finished by then (its
        # callback still queued) holds a connection that must not be lost: on_message gets
        # it, and hands it back when the Node is stopping or full.
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            logger.warning("receive on %r failed: %s", key, error)
            asyncio.get_running_loop().call_later(0.1, self.fill)
            return
        self._last_taken[key] = time.monotonic()
        self.on_message(key, future.result())
        if self.room() <= 0:
            self.cancel()
        else:
            self.fill(taken_on=key)
