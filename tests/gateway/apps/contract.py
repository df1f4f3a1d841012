"""An app whose first line leaves a trace, for the 503 contract and the Node's intake tests.

``/block/NAME?seconds=S``: mark ``ran-NAME``, then block the whole event loop for S seconds
(``time.sleep``), so nothing else in the Node runs meanwhile; then answer 200.
``/hold/NAME?seconds=S``: mark ``ran-NAME``, then wait S seconds (``asyncio.sleep``); then 200.

The marker is the application's first line: once the file exists, application code has run.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def mark(scope: Scope) -> None:
    name = "ran-" + scope["path"].rsplit("/", 1)[-1]
    Path(os.environ["MARKER_DIR"], name).write_text(str(os.getpid()))


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    mark(scope)
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    seconds = float(query.get("seconds", "30"))
    if scope["path"].startswith("/block/"):
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point
    else:
        await asyncio.sleep(seconds)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
