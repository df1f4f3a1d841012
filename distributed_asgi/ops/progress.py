"""Start-up progress of ``distributed-asgi up``: each part on its own line as it happens.

Why lines and not a live spinner: the children (workers, edge) write their own logs to the same
terminal while they start, and anything that redraws lines in place would be torn by them. So
every step prints when it begins (if it takes time) and when it ends, numbered ``[i/N]``. On a
terminal the lines are coloured by rich; anywhere else (a pipe, a log file, a test) they are
plain text with no escape codes, so logs stay readable and greppable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["StartupProgress", "Step"]


class Step:
    """One part being started; ``done()`` says what now runs where."""

    def __init__(self, progress: StartupProgress, number: int, name: str) -> None:
        self.progress = progress
        self.number = number
        self.name = name
        self.started = time.monotonic()
        self.finished = False

    def done(self, detail: str, *, timed: bool = True) -> None:
        elapsed = f" ({time.monotonic() - self.started:.2f} s)" if timed else ""
        self.progress._line(self, "done", f"{detail}{elapsed}")
        self.finished = True

    def failed(self, detail: str = "failed") -> None:
        elapsed = time.monotonic() - self.started
        self.progress._line(self, "failed", f"{detail} ({elapsed:.2f} s)")
        self.finished = True


class StartupProgress:
    """Prints numbered start-up steps through ``out`` (plain) or a rich console (``styled``).

    ``styled=None`` means: styled when ``out`` is ``print`` and standard output is a terminal.
    """

    def __init__(
        self,
        total: int,
        out: Callable[[str], None] = print,
        *,
        styled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.out = out
        self.count = 0
        if styled is None:
            styled = out is print and _is_terminal(stream or sys.stdout)
        self.console: Any = None
        if styled:
            from rich.console import Console

            # highlight=False: rich would otherwise colour numbers and URLs at random.
            self.console = Console(file=stream, highlight=False, soft_wrap=True)

    @property
    def styled(self) -> bool:
        return self.console is not None

    def begin(self, name: str, doing: str | None = None) -> Step:
        """A new step, numbered in the order steps begin; ``doing`` is printed at once.

        Steps may overlap (the workers and the edge start at the same time): each one's
        ``done()`` prints when that part is ready, whatever the order.
        """
        self.count += 1
        step = Step(self, self.count, name)
        if doing is not None:
            self._line(step, "doing", doing)
        return step

    @contextmanager
    def step(self, name: str, doing: str | None = None) -> Iterator[Step]:
        """``begin()`` as a context: an exception inside marks the step failed (the caller
        reports the error itself); a step left without ``done()`` is marked done with no detail.
        """
        step = self.begin(name, doing)
        try:
            yield step
        except BaseException:
            if not step.finished:
                step.failed()
            raise
        if not step.finished:
            step.done("ok")

    def _line(self, step: Step, state: str, text: str) -> None:
        number = f"[{step.number}/{max(self.total, step.number)}]"
        if self.console is None:
            suffix = " ..." if state == "doing" else ""
            prefix = "FAILED " if state == "failed" else ""
            self.out(f"{number} {step.name}: {prefix}{text}{suffix}")
            return
        from rich.markup import escape

        mark = {"doing": "[cyan]…[/]", "done": "[green]✓[/]", "failed": "[bold red]✗[/]"}[state]
        style = {"doing": "dim", "done": "", "failed": "red"}[state]
        body = escape(text)
        if style:
            body = f"[{style}]{body}[/]"
        self.console.print(f"{mark} [dim]{number}[/] [bold]{escape(step.name)}[/]: {body}")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
