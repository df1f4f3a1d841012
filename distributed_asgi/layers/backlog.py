"""Entries popped from a Redis queue and not yet returned by ``receive()``, kept for the layer.

A reader runs in one event loop, but what it popped must outlive that loop: sync code calls
the layer through ``async_to_sync``, a new loop each call, and several threads may receive on
one layer at once. So the entries a reader could not hand to a waiter of its own loop wait here,
where the readers of every loop take from; a reader that buffers an entry tells the readers of
the other loops, which may have a waiter for it. Thread-safe; the lock is held for dict and
deque operations only.

A process inbox is popped by one loop's reader at a time (its *turn*, ``take_turn``), for the
waiters of every loop: two readers popping at once could hand on a later entry of a channel
before an earlier one the other popped, and a channel's messages must arrive in the order sent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["Backlog", "BacklogReader"]


class BacklogReader(Protocol):
    """What a backlog needs of a reader: to be told, in its own loop, about a new entry."""

    def notify(self, channel: str) -> bool:
        """Look at the backlog for ``channel`` soon; False when the reader's loop is gone."""
        ...

    def turn_free(self) -> bool:
        """The reader whose turn it was to pop stopped: take the turn if waiters need it.
        False when the reader's loop is gone."""
        ...

    def waiting(self) -> int:
        """How many of the reader's waiters wait (read from any thread)."""
        ...

    def gone(self) -> bool:
        """Whether the reader can do nothing more (its loop closed)."""
        ...


class Backlog:
    def __init__(self, expiry: float) -> None:
        self.expiry = expiry
        self._lock = threading.Lock()
        self._entries: dict[str, deque[tuple[float, bytes]]] = {}  # (monotonic time popped, raw)
        self._readers: list[BacklogReader] = []  # one per event loop reading this queue
        self._turn: BacklogReader | None = None  # the reader popping the queue now

    def attach(self, reader: BacklogReader) -> None:
        with self._lock:
            self._readers.append(reader)

    def detach(self, reader: BacklogReader) -> None:
        with self._lock:
            if reader in self._readers:
                self._readers.remove(reader)
        self.end_turn(reader)

    def take_turn(self, reader: BacklogReader) -> bool:
        """Whether ``reader`` may pop the queue now: no other reader's turn is under way."""
        with self._lock:
            turn = self._turn
            if turn is None or turn is reader or turn.gone():
                self._turn = reader
                return True
            return False

    def end_turn(self, reader: BacklogReader) -> None:
        """``reader`` pops no more: the readers of the other loops hear the turn is free."""
        with self._lock:
            if self._turn is not reader:
                return
            self._turn = None
            others = [r for r in self._readers if r is not reader]
        for other in others:
            if not other.turn_free():
                self.detach(other)

    def waiting_elsewhere(self, reader: BacklogReader) -> int:
        """Waiters of the other loops' readers: ``reader`` pops for them too in its turn."""
        readers = self._readers
        if len(readers) < 2:  # the common case: one loop, no lock
            return 0
        with self._lock:
            # A reader whose loop closed with waiters still counted waits for nothing.
            return sum(r.waiting() for r in readers if r is not reader and not r.gone())

    def put(
        self, channel: str, entry: bytes, source: BacklogReader, *, front: bool = False
    ) -> None:
        """Keep ``entry`` for the next ``receive()`` of ``channel``, in whichever loop."""
        with self._lock:
            buffer = self._entries.get(channel)
            if buffer is None:
                buffer = self._entries[channel] = deque()
            if front:  # a waiter that was cancelled after it got the entry: it stays first
                buffer.appendleft((time.monotonic(), entry))
            else:
                buffer.append((time.monotonic(), entry))
            others = [r for r in self._readers if r is not source] if len(self._readers) > 1 else []
        for reader in others:
            if not reader.notify(channel):
                self.detach(reader)

    def holds(self, channel: str) -> bool:
        """Whether entries of ``channel`` wait here (a look without the lock)."""
        return channel in self._entries

    def take(self, channel: str, dropped: Callable[[str, bytes], None]) -> bytes | None:
        """The oldest live entry of ``channel``; ``dropped(channel, entry)`` for each expired
        one."""
        if channel not in self._entries:  # the common case, without the lock
            return None
        expired: list[bytes] = []
        entry = None
        cutoff = time.monotonic() - self.expiry
        with self._lock:
            buffer = self._entries.get(channel)
            while buffer:
                popped_at, candidate = buffer.popleft()
                if popped_at >= cutoff:
                    entry = candidate
                    break
                expired.append(candidate)
            if buffer is not None and not buffer:
                del self._entries[channel]
        for gone in expired:
            dropped(channel, gone)
        return entry

    def take_all(self) -> list[bytes]:
        """Every entry, oldest first per channel (to put them back on their Redis queue)."""
        with self._lock:
            entries = [entry for buffer in self._entries.values() for _, entry in buffer]
            self._entries.clear()
        return entries

    def sweep(self, dropped: Callable[[str, bytes], None]) -> None:
        """Forget entries nobody received before they expired (an inbox collects late replies
        for channels its process no longer reads)."""
        cutoff = time.monotonic() - self.expiry
        expired: list[tuple[str, bytes]] = []
        with self._lock:
            for channel in list(self._entries):
                buffer = self._entries[channel]
                while buffer and buffer[0][0] < cutoff:
                    expired.append((channel, buffer.popleft()[1]))
                if not buffer:
                    del self._entries[channel]
        for channel, entry in expired:
            dropped(channel, entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(buffer) for buffer in self._entries.values())

    def __bool__(self) -> bool:
        return bool(self._entries)
