"""In-process servers for running one inline app both under uvicorn and behind the gateway.

- ``uvicorn_server(app, **config)``: a real ``uvicorn.Server`` in a thread; yields its port.
- ``inline_node(app, redis_url, prefix, keys, **options)``: a real ``Node`` in a thread on the
  test's Redis and prefix (the edge is the ``gateway`` fixture's process); stopped on exit.

Both run the app in this process, so an app can hand what it saw to the test through a
``queue.Queue``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from distributed_asgi import Node
from distributed_asgi.ops.redis_process import free_port


@contextmanager
def uvicorn_server(app: Any, **config: Any) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **config
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def inline_node(
    app: Any, redis_url: str, prefix: str, keys: list[str], *, as_cls: bool = False, **options: Any
) -> Iterator[Node]:
    """``Node(app=app)``, or ``Node(cls=app)`` with ``as_cls``."""
    options.setdefault("lifespan", "off")
    options["cls" if as_cls else "app"] = app
    node = Node(keys=keys, url=redis_url, layer_options={"prefix": prefix}, **options)
    # Node.run() in a thread: signal handlers are only for the main thread, and it skips them.
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        node.stop()
        thread.join(15)
