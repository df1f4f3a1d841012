"""The event loop a Node runs on: asyncio's own or uvloop's (``Node(loop=...)``, ``--loop``).

It takes the user's configuration, so it stays plain Python (compile_native.py).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["loop_factory", "run_in_new_loop"]


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes ``Node.run()``'s event loop: None for asyncio's own (``asyncio.run``)."""
    if loop not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"loop must be one of 'auto', 'asyncio', 'uvloop', got {loop!r}")
    if loop == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if loop == "uvloop":
            raise ValueError("loop='uvloop' needs uvloop, which is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_in_new_loop(
    main: Coroutine[Any, Any, None], factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    """``asyncio.run(main)``, in a new event loop made by ``factory`` (asyncio's own: None)."""
    if factory is None:
        asyncio.run(main)
    elif sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
    else:  # pragma: no cover - Python 3.10
        loop = factory()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(main)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
