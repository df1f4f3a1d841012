"""``worker --processes N``: N copies of one command, kept running, stopped together.

Rules of this module:

- Each child is the ordinary command (``python -m distributed_asgi worker ...``, without
  ``--processes``), so what runs is what runs with one process. Each runs in its own session
  and gets SIGTERM if the pool dies (ops/processes.py ``spawn``): a Ctrl-C at the terminal
  reaches only the pool, which forwards it.
- A child that exits while the pool is not stopping has crashed: the pool logs it (exit code or
  signal) and starts a new one after a backoff that doubles from ``RESTART_DELAY`` up to
  ``RESTART_DELAY_MAX``, back to the start once a child has run ``STABLE_AFTER`` seconds. A
  child that exits with ``STARTUP_FAILURE`` (its configuration or application cannot start)
  would fail the same way again: the pool stops the others and exits with that code.
- SIGTERM or SIGINT is forwarded to every child, each of which drains; the pool exits once the
  last one has, 0 when every child exited 0. A second signal is forwarded too: the children
  exit at once.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from distributed_asgi.ops.processes import spawn

__all__ = ["RESTART_DELAY", "RESTART_DELAY_MAX", "STABLE_AFTER", "STARTUP_FAILURE", "ProcessPool"]

logger = logging.getLogger("distributed_asgi.pool")

RESTART_DELAY = 0.5  # seconds before the first restart of a crashed child
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long resets its slot's backoff
STARTUP_FAILURE = 3  # the edge's and the worker's exit code when they cannot start
_POLL = 0.1


@dataclass
class _Slot:
    """One of the N places a child runs in."""

    index: int
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY
    restart_at: float | None = None  # a crashed child's replacement is due (monotonic)


class ProcessPool:
    """``count`` children made by ``command(index)``, restarted when they crash."""

    def __init__(self, what: str, command: Callable[[int], Sequence[str]], count: int) -> None:
        self.what = what
        self.slots = [_Slot(index, list(command(index))) for index in range(count)]
        self._signals = 0
        self._failed: int | None = None  # a child's STARTUP_FAILURE: the pool gives up

    def run(self) -> int:
        """Start the children and keep them running until a signal; the exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self.slots:
                self._start(slot)
            logger.info(
                "%d %s processes started: %s",
                len(self.slots),
                self.what,
                ", ".join(str(slot.process.pid) for slot in self.slots if slot.process),
            )
            while not self._stopping:
                self._tend()
                time.sleep(_POLL)
            return self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def _stopping(self) -> bool:
        return self._signals > 0 or self._failed is not None

    def _start(self, slot: _Slot) -> None:
        slot.process = spawn(slot.command)
        slot.started = time.monotonic()
        slot.restart_at = None

    def _tend(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    self._start(slot)
                    logger.info("%s process %d restarted", self.what, slot.index)
                continue
            code = slot.process.poll() if slot.process is not None else None
            if code is None:
                continue
            if code == STARTUP_FAILURE:
                logger.error(
                    "%s process %d could not start (exit code %d): stopping the others",
                    self.what,
                    slot.index,
                    code,
                )
                self._failed = code
                return
            if now - slot.started >= STABLE_AFTER:
                slot.delay = RESTART_DELAY
            logger.warning(
                "%s process %d (pid %d) exited unexpectedly (%s): restarting it in %.1fs",
                self.what,
                slot.index,
                slot.process.pid if slot.process else 0,
                _how(code),
                slot.delay,
            )
            slot.restart_at = now + slot.delay
            slot.delay = min(slot.delay * 2, RESTART_DELAY_MAX)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(
                "%s received: stopping %d %s processes (each drains)",
                signal.Signals(signum).name,
                len(self.slots),
                self.what,
            )
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signum)

    def _stop(self) -> int:
        if self._failed is not None:
            self._forward(signal.SIGTERM)
        codes = []
        for slot in self.slots:
            if slot.process is not None and slot.restart_at is None:
                codes.append(slot.process.wait())
        logger.info("all %s processes stopped", self.what)
        if self._failed is not None:
            return self._failed
        return next((code for code in codes if code != 0), 0)


def _how(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
