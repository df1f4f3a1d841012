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
- Each receive is a task that hands its message on and refills the room as soon as it has
  it; then it runs the connection the message started, so a connection costs one task from
  its receive to its end. A cancelled receive puts what it popped back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from distributed_asgi.core.types import Message
from distributed_asgi.layers import GatewayLayer

__all__ = ["IDLE_AFTER", "Intake"]

logger = logging.getLogger("distributed_asgi.node")

# A key that took no connect for this long is idle (see the rules above).
IDLE_AFTER = 1.0


class Intake:
    """Receives on ``keys``; each message goes to ``on_message(key, message)``, which returns
    the connection it started (awaited in the receive's task, after the refill) or None.

    ``room()`` is how many more connections the Node may take now (0 when it is stopping).
    """

    def __init__(
        self,
        layer: GatewayLayer,
        keys: list[str],
        room: Callable[[], int],
        on_message: Callable[[str, Message], Awaitable[None] | None],
    ) -> None:
        self.layer = layer
        self.keys = keys
        self.room = room
        self.on_message = on_message
        self._receives: dict[asyncio.Task[None], str] = {}
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
        task = asyncio.get_running_loop().create_task(self._take(key))
        self._receives[task] = key
        self._receiving[key] += 1

    async def _take(self, key: str) -> None:
        """One receive on ``key``, then the connection its message started, if any."""
        task = asyncio.current_task()
        try:
            message = await self.layer.receive(key)
        except Exception as error:
            logger.warning("receive on %r failed: %s", key, error)
            asyncio.get_running_loop().call_later(0.1, self.fill)
            return
        finally:
            # Not there once cancel() (or a take-back) let go of it: it was cancelled, and
            # the layer put back what it had popped.
            if task is not None and self._receives.pop(task, None) is not None:
                self._receiving[key] -= 1
        self._last_taken[key] = time.monotonic()
        # It may come when the Node is stopping or full (a receive that finished just then):
        # on_message hands it back then.
        connection = self.on_message(key, message)
        if self.room() <= 0:
            self.cancel()
        else:
            self.fill(taken_on=key)
        if connection is not None:
            await connection
