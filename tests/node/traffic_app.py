"""An app that records what a Node runs at once, for the traffic-control tests.

``/GROUP/NAME?seconds=S``: append ``start GROUP NAME RUNNING TIME`` to
``$MARKER_DIR/events-PID`` (RUNNING: GROUP's connections running in this process, this one
included; TIME: ``time.time()``), wait S seconds (``asyncio.sleep``), append
``end GROUP NAME TIME``, answer 200. The lines are in the order the
application ran them: the Node is one event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

running: Counter[str] = Counter()


def _log(line: str) -> None:
    with open(Path(os.environ["MARKER_DIR"], f"events-{os.getpid()}"), "a") as events:
        events.write(line + "\n")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    _, group, name = scope["path"].split("/", 2)
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    running[group] += 1
    try:
        _log(f"start {group} {name} {running[group]} {time.time()}")
        await asyncio.sleep(float(query.get("seconds", "0")))
        _log(f"end {group} {name} {time.time()}")
    finally:
        running[group] -= 1
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": name.encode()})


def events(directory: Path) -> list[list[str]]:
    """Every process's lines, split into words, each process's in its order."""
    return [
        line.split()
        for path in sorted(directory.glob("events-*"))
        for line in path.read_text().splitlines()
    ]
