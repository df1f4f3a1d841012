"""Flow control of one connection, end to end: a credit window of ``asgi`` frames each way.

Rules of this file (no I/O; the edge and the Node each keep one ``CreditWindow`` per
connection and send the frames themselves):

- A sender may have ``CREDIT_WINDOW`` frames on their way without credit for them: ``take()``
  before each one, waiting while none is left (the other side is slower); ``take_now()``
  when there is credit, which most frames find, without a wait.
- A receiver counts each frame its consumer has taken (``consumed()``) and gives them back as
  one ``credit`` frame once half a window has been taken, so a short exchange sends no credit.
- Credit that comes in (``granted``) wakes a waiting sender; so does ``release()``, for a
  connection that is over (the waiter then checks why it woke).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from distributed_asgi.core.frames import CREDIT_WINDOW

__all__ = ["CreditWindow"]


class CreditWindow:
    def __init__(self) -> None:
        self.available = CREDIT_WINDOW  # frames this side may still send
        self.untold = 0  # frames of the other side taken and not yet given back
        # Made by the first take() that has to wait: most connections never do.
        self._granted: asyncio.Event | None = None

    def take_now(self) -> bool:
        """Take credit for one frame if there is any, without waiting; False if none is left."""
        if self.available > 0:
            self.available -= 1
            return True
        return False

    async def take(self, over: Callable[[], bool] = lambda: False) -> bool:
        """Wait for credit for one frame and take it; False when ``over()`` came first."""
        while self.available <= 0:
            if over():
                return False
            granted = self._granted
            if granted is None:
                granted = self._granted = asyncio.Event()
            granted.clear()
            await granted.wait()
        if over():
            return False
        self.available -= 1
        return True

    def granted(self, frames: int) -> None:
        self.available += frames
        if self._granted is not None:
            self._granted.set()

    def release(self) -> None:
        if self._granted is not None:
            self._granted.set()

    def consumed(self) -> None:
        self.untold += 1

    def due(self) -> int:
        """Frames to give back now (0: not yet half a window)."""
        if self.untold < CREDIT_WINDOW // 2:
            return 0
        frames, self.untold = self.untold, 0
        return frames
