"""``AckLedger``: acks (messages received) for one server not yet written to it.

It belongs to the layer, not to an event loop: acks merge here while they wait for a batch,
and whichever loop writes to that server next takes them all (shard.py), so an ack a loop did
not get to write before it ended is not lost. Thread-safe: the lock is held for dict
operations only.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["AckLedger"]


class AckLedger:
    """Acks for one server not yet written to it: counter key -> channel -> messages received.

    Shared by the shards of every event loop (and so thread-safe): acks merge here while they
    wait for a batch, and whichever loop writes to the server next takes them all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}

    def add(self, counter_key: str, channel: str) -> None:
        with self._lock:
            counts = self._counts.get(counter_key)
            if counts is None:
                counts = self._counts[counter_key] = Counter()
            counts[channel] += 1

    def take(self) -> dict[str, Counter[str]]:
        with self._lock:
            taken, self._counts = self._counts, {}
        return taken

    def restore(self, counter_key: str, counts: Counter[str]) -> None:
        """Give back acks taken for a batch that was never written."""
        with self._lock:
            self._counts.setdefault(counter_key, Counter()).update(counts)

    def discard(self, counter_key: str) -> None:
        """Forget the acks of a counter that is being deleted (they would re-create it)."""
        with self._lock:
            self._counts.pop(counter_key, None)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def __bool__(self) -> bool:
        return bool(self._counts)
