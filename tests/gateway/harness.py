"""A whole gateway in the test's own event loop: ``async with run_gateway(app) as gw``.

uvicorn's ``Server`` runs the ``Distributor`` and ``Node.arun()`` runs ``app``, both as tasks of
the running loop, so a test is an ``async def`` with an inline app that can hand what it saw to
the test through an ``asyncio.Queue``. The clients must be async (httpx.AsyncClient,
websockets.asyncio): a blocking client would stop the very loop that serves it.

The layer is a real Redis (``redis_url`` and ``prefix``; the edge and the Node each build their
own, as separate processes would) or, where the layer is not the subject, one shared
``InMemoryChannelLayer`` (the default).

On exit uvicorn is told ``should_exit`` and the Node ``stop()``; both tasks are awaited, so a
test leaves no task behind, and an error either raised is raised in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn

from distributed_asgi import Distributor, Node, create_path_distributor
from distributed_asgi.layers import InMemoryChannelLayer
from distributed_asgi.ops.redis_process import free_port

# The ASGI aliases the inline apps are typed with.
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEY = "app"
STOP_TIMEOUT = 20.0


@dataclass
class RunningGateway:
    server: uvicorn.Server
    distributor: Distributor
    node: Node
    port: int

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def base_url(self) -> str:
        return self.url("")

    def ws_url(self, path: str = "/ws") -> str:
        return self.url(path, "ws")


@contextlib.asynccontextmanager
async def run_gateway(
    app: Any,
    *,
    redis_url: str | None = None,
    prefix: str | None = None,
    routes: Iterable[tuple[str, str]] = (("^/", KEY),),
    keys: Iterable[str] = (KEY,),
    node_options: Mapping[str, Any] | None = None,
    uvicorn_options: Mapping[str, Any] | None = None,
    layer_options: Mapping[str, Any] | None = None,
    as_cls: bool = False,
    **distributor_options: Any,
) -> AsyncIterator[RunningGateway]:
    """Serve ``app`` behind an edge on a free port until the block ends.

    ``redis_url`` (with ``prefix``) puts the gateway on that Redis; without it both ends share
    one ``InMemoryChannelLayer`` (``layer_options`` are passed to whichever layer is built).
    ``distributor_options`` go to the ``Distributor``, ``node_options`` to the ``Node``
    (lifespan "off" unless given; ``Node(cls=app)`` with ``as_cls``), ``uvicorn_options`` to
    ``uvicorn.Config``.
    """
    routes = list(routes)
    if redis_url is None:
        layer = InMemoryChannelLayer(**(layer_options or {}))
        distributor = Distributor(layer, routes, **distributor_options)
        node_layer: dict[str, Any] = {"layer": layer}
    else:
        options = {"prefix": prefix or "", **(layer_options or {})}
        distributor = create_path_distributor(
            url=redis_url, routes=routes, layer_options=options, **distributor_options
        )
        node_layer = {"url": redis_url, "layer_options": options}
    node = Node(
        keys=list(keys),
        **{"cls" if as_cls else "app": app},
        **{"lifespan": "off", **(node_options or {})},
        **node_layer,
    )
    port = free_port()
    config = uvicorn.Config(
        distributor,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **(uvicorn_options or {}),
    )
    server = uvicorn.Server(config)
    node_task = asyncio.ensure_future(node.arun())
    server_task = asyncio.ensure_future(server.serve())
    try:
        await _until_started(server, server_task, node_task)
        yield RunningGateway(server, distributor, node, port)
    finally:
        server.should_exit = True
        node.stop()
        done, pending = await asyncio.wait({server_task, node_task}, timeout=STOP_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # an error in either is the test's error
        if pending:
            raise AssertionError(f"the gateway did not stop within {STOP_TIMEOUT}s")


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    """Wait until ``condition()`` holds (polled every 20 ms), or fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what or condition!r} did not hold within {timeout}s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def run_uvicorn(app: Any, **config: Any) -> AsyncIterator[int]:
    """``app`` under uvicorn alone (no gateway) in this loop, to compare with; yields its port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **config
        )
    )
    task = asyncio.ensure_future(server.serve())
    try:
        await _until_started(server, task)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, STOP_TIMEOUT)


async def _until_started(server: uvicorn.Server, *tasks: asyncio.Future[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not server.started:
        for task in tasks:
            if task.done():
                task.result()
                raise RuntimeError("the gateway stopped while starting")
        if loop.time() > deadline:
            raise RuntimeError("uvicorn did not start within 20s")
        await asyncio.sleep(0.01)
