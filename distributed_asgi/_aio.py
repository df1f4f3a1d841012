"""asyncio helpers shared by the edge and the Node: a task's one timer (``Deadline``), waits
bounded by a budget of their own (``within``, ``wait_event``, on a ``Deadline`` each), and turns
(``Turns``).

Per-request code, compiled by ``make compile``: nothing here awaits inside a handler or uses
``async with`` (compile_native.py says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Deadline", "DeadlineExceeded", "Turns", "wait_event", "within"]

_T = TypeVar("_T")


class DeadlineExceeded(Exception):
    """A layer call did not finish within what a connection's budget left for it."""


class Deadline:
    """The one timer of one task's waits: a connection's pick-up and then each wait for its
    Node's next frame, instead of an ``asyncio.timeout`` (an object, two running-loop lookups
    and a state machine) per wait.

    ``await deadline.wait(awaitable, when)`` awaits it, or raises ``TimeoutError`` once
    ``when`` (loop time; None: never) passes or ``expire()`` is called meanwhile, by cancelling
    the task that waits, as ``asyncio.timeout`` does; a cancellation from anyone else passes
    through as ``CancelledError``. Made in, and waited in, the task it cancels.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_loop", "_task", "waiting")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(self._loop)  # given the loop: no second look-up
        assert task is not None, "a Deadline is made in the task whose waits it bounds"
        self._task = task
        self._cancelling = 0  # cancellations under way when it was made (3.11 counts them)
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False
        self.waiting = False  # a wait is under way (and has not expired)

    async def wait(self, awaitable: Awaitable[_T], when: float | None) -> _T:
        self._fired = False
        if when is not None:
            self._handle = self._loop.call_at(when, self._fire)
        self.waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._fired and self._uncancel() <= self._cancelling:
                raise TimeoutError from None
            raise
        finally:
            self.waiting = False
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def now(self) -> float:
        """The loop's time, as ``wait``'s ``when`` counts it."""
        return self._loop.time()

    def expire(self) -> None:
        """End the wait under way now, with ``TimeoutError``."""
        if self.waiting and not self._fired:
            self._fire()

    def expired(self) -> bool:
        """The last wait ended (or is ending) by the deadline or ``expire()``."""
        return self._fired

    def _fire(self) -> None:
        self._fired = True
        self.waiting = False
        self._handle = None
        self._task.cancel()

    def _uncancel(self) -> int:
        if sys.version_info >= (3, 11):
            return self._task.uncancel()
        return 0  # pragma: no cover - Python 3.10 does not count cancellations


class Turns:
    """One at a time, first come first served: an ``asyncio.Lock`` without its cost when
    nobody waits (a connection's frames go out in order, and an application may send from two
    tasks). ``if not turns.take_now(): await turns.wait()``, then ``turns.done()``."""

    __slots__ = ("_busy", "_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._busy = False  # a turn is under way
        self._waiting: deque[asyncio.Future[None]] | None = None  # made by the first wait

    def take_now(self) -> bool:
        """Take the turn if it is free; False when it is not (``wait()`` for it then)."""
        if self._busy:
            return False
        self._busy = True
        return True

    async def wait(self) -> None:
        """Wait for the turns under way before this one; the turn is then this one's."""
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = deque()
        turn = self._loop.create_future()
        waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.done()  # given the turn just as it was cancelled: pass it on
            elif turn in waiting:
                waiting.remove(turn)
            raise

    def done(self) -> None:
        """The turn under way is over: the next waiting one has it, else nobody."""
        waiting = self._waiting
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # its owner goes next (still busy)
                return
        self._busy = False


async def within(seconds: float, awaitable: Awaitable[_T]) -> _T:
    """``await awaitable``, or ``DeadlineExceeded`` after ``seconds``; a timeout raised inside
    (the client library's own) passes through unchanged. A cancelled command's connection is
    discarded by the layer, never reused with its reply unread."""
    deadline = Deadline()
    try:
        return await deadline.wait(awaitable, deadline.now() + max(0.0, seconds))
    except TimeoutError:
        if deadline.expired():
            raise DeadlineExceeded from None
        raise


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` have passed, whichever comes first."""
    deadline = Deadline()
    with contextlib.suppress(TimeoutError):
        await deadline.wait(event.wait(), deadline.now() + seconds)
