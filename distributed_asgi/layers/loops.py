"""A layer's state in each event loop, and noticing when a loop ends.

Connections and reader tasks belong to one event loop, and one layer object meets many: sync
code calls it through ``async_to_sync``, which runs every call in a new loop (``asyncio.run``
in a new thread), and several threads may do so at once.

Rules of this file:

- One state per running loop, made on first use together with a *watcher* task that waits
  forever. ``asyncio.run`` (and so ``async_to_sync``, and pytest-asyncio) cancels every task of
  a loop before closing it, and waits for them: the watcher's cancellation is the signal to
  tear the state down while the loop still runs (readers read back what is on the wire, acks
  are written, connections closed).
- The layer's ``close()`` takes its loop's state away first (``pop``), so the watcher then
  finds nothing to do.
- A loop closed without cancelling its tasks (``loop.close()`` with tasks pending) is found
  closed when the next state is made, and its state dropped without I/O: no loop is kept
  alive by a layer that outlives it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["LoopState", "LoopStates"]


class LoopState(Protocol):
    async def teardown(self) -> None:
        """Release everything of this loop (it is ending, but still runs)."""
        ...

    def abandon(self) -> None:
        """Forget everything of this loop without I/O (it is closed)."""
        ...


S = TypeVar("S", bound=LoopState)


class LoopStates(Generic[S]):
    def __init__(self, factory: Callable[[], S]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._states: dict[asyncio.AbstractEventLoop, S] = {}
        self._watchers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    def get(self) -> S:
        """The running loop's state, made on first use."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._create(loop)
        return state

    def _create(self, loop: asyncio.AbstractEventLoop) -> S:
        self._forget_closed_loops()
        state = self._factory()
        with self._lock:
            self._states[loop] = state
            self._watchers[loop] = loop.create_task(self._watch(loop, state))
        return state

    async def _watch(self, loop: asyncio.AbstractEventLoop, state: S) -> None:
        try:
            await loop.create_future()  # never set: only cancellation ends this wait
        except asyncio.CancelledError:
            with self._lock:
                ending = self._states.get(loop) is state
                if ending:
                    del self._states[loop]
                    self._watchers.pop(loop, None)
            if ending:
                await state.teardown()
            raise

    def _forget_closed_loops(self) -> None:
        with self._lock:
            closed = [(loop, s) for loop, s in self._states.items() if loop.is_closed()]
            for loop, _ in closed:
                del self._states[loop]
                self._watchers.pop(loop, None)
        for _, state in closed:
            state.abandon()

    def pop(self) -> S | None:
        """Take the running loop's state away (its owner tears it down itself)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.pop(loop, None)
            watcher = self._watchers.pop(loop, None)
        if watcher is not None:
            watcher.cancel()
        return state

    def others(self) -> bool:
        """Whether a loop other than the running one has a state and is not closed."""
        loop = asyncio.get_running_loop()
        with self._lock:
            return any(other is not loop and not other.is_closed() for other in self._states)

    def __len__(self) -> int:
        return len(self._states)
