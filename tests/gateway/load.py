"""Steady client load for the fault tests: a few threads sending requests back to back.

Each request is recorded with its start, its duration and its outcome (a status code or the
exception's name), so a test can assert on what clients saw during and after a fault.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic()
    seconds: float
    result: int | str  # status code, or the exception's class name


@dataclass
class SteadyLoad:
    url: str
    clients: int = 4
    timeout: float = 30.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> SteadyLoad:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _client(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                result: int | str
                try:
                    result = client.get(self.url).status_code
                except httpx.HTTPError as exc:
                    result = type(exc).__name__
                with self._lock:
                    self.outcomes.append(Outcome(started, time.monotonic() - started, result))

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` more requests have finished (the load is really flowing)."""
        target = len(self.outcomes) + count
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load stalled: {self.summary()}")
            time.sleep(0.02)

    def summary(self, since: float = 0.0) -> Counter[int | str]:
        with self._lock:
            return Counter(o.result for o in self.outcomes if o.started >= since)

    def slowest(self) -> float:
        with self._lock:
            return max((o.seconds for o in self.outcomes), default=0.0)
