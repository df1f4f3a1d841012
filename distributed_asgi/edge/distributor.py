"""The edge: an ASGI 3 application that hands each connection to whichever Node takes it.

One connection, as the edge sees it (docs/PROTOCOL.md has the frames):

1. Route the path (no route: 404 here). Make a reply channel for the connection and send a
   ``connect`` frame to the route's channel, with the first client message when it is already
   there (a whole small request body, or ``websocket.connect``).
2. Wait up to ``pickup_timeout`` for an ``accept`` (which may carry the application's first
   messages, e.g. a whole short response): none means no Node is free, so the client
   gets ``no_worker_status`` (503) with ``Retry-After``. A full route channel answers the same
   at once: nothing is queued that the edge would have to wait for.
3. Pump both ways until the application's side is finished: client ``receive()`` -> the Node's
   channel, reply channel -> client ``send()``. A Node silent for ``heartbeat_misses`` of its
   heartbeat intervals is gone: 502 if the response had not started, else the connection closes.
   HTTP only: no response started within ``first_byte_timeout`` of the request's arrival, or
   none complete within ``total_timeout``, is 504 (or a closed connection once it started).

The edge handles lifespan itself (the Nodes run the application's) and closes the layer on
shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Collection, Iterable, Mapping
from typing import Any

from distributed_asgi._liveness import Liveness
from distributed_asgi.core.outcomes import EdgeRecorder, Outcome
from distributed_asgi.core.routing import RouteTable
from distributed_asgi.core.types import Receive, Scope, Send
from distributed_asgi.edge.connection import EdgeConnection
from distributed_asgi.edge.refusal import RemoteApplicationError, refuse
from distributed_asgi.edge.retry import count_retry
from distributed_asgi.edge.settings import DEFAULT_RETRY_METHODS, EdgeSettings
from distributed_asgi.layers import GatewayLayer, claiming
from distributed_asgi.layers.build import build_layer

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "Distributor",
    "RemoteApplicationError",
    "create_path_distributor",
]


DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024


def create_path_distributor(
    host: str | None = None,
    port: int | str | None = None,
    db: int = 0,
    password: str | None = None,
    routes: Mapping[str, str] | Iterable[tuple[str, str]] | RouteTable | None = None,
    *,
    url: str | None = None,
    layer: GatewayLayer | None = None,
    layer_options: Mapping[str, Any] | None = None,
    backlog: int | None = None,
    **distributor_options: Any,
) -> Distributor:
    """A ``Distributor`` over a Redis layer, routing by path (the README's entry point).

    ``backlog``: connections that may wait in a route channel (``DEFAULT_BACKLOG``, 1000, when
    None); beyond it the edge answers 503 at once. Only for a layer built here.
    """
    if routes is None:
        raise ValueError("create_path_distributor needs routes, e.g. {'/': 'ALL-TRAFFIC'}")
    channel_layer = build_layer(
        host,
        port,
        db,
        password,
        url=url,
        layer=layer,
        layer_options=layer_options,
        backlog=backlog,
    )
    return Distributor(channel_layer, routes, **distributor_options)


class Distributor:
    """An ASGI 3 application that routes each connection to a Node through ``layer``.

    - ``routes``: a ``RouteTable``, a mapping or ``(regex, key template)`` pairs (in order).
    - ``pickup_timeout`` (5 s): how long a Node may take to accept a connection.
    - ``first_byte_timeout`` (60 s) and ``total_timeout`` (300 s), HTTP only, counted from the
      request's arrival: no response started in time is 504; a response not complete in time is
      504 if it had not started, else its connection is closed. The application is told
      ``http.disconnect``. ``None`` turns one off. WebSockets live as long as both ends want.
    - ``no_worker_status`` (503) and ``retry_after`` (1 s): the answer when none does, or when
      the route channel is full.
    - ``max_body_size`` (100 MiB): larger request bodies get 413 and are not forwarded.
    - ``heartbeat_interval`` (2 s) and ``heartbeat_misses`` (3): the edge tells each Node process
      it has connections with that it is alive this often (one frame per Node, whatever the
      number of connections), and gives up on a Node silent for this many of *its* intervals.
    - ``retries`` (1) and ``retry_methods`` (GET, HEAD, OPTIONS): a request whose Node is lost
      before any of its response reached the client goes once more (up to ``retries`` times)
      to the route channel for another Node to serve, when its method is one of these, its
      whole body came with it, and it is not a WebSocket. 0 turns retrying off.
    - ``metrics``: an ``EdgeRecorder`` (``ops.metrics.edge_metrics()``) to count connections in;
      None (the default) counts nothing.
    """

    def __init__(
        self,
        layer: GatewayLayer,
        routes: Mapping[str, str] | Iterable[tuple[str, str]] | RouteTable,
        *,
        pickup_timeout: float = 5.0,
        first_byte_timeout: float | None = 60.0,
        total_timeout: float | None = 300.0,
        no_worker_status: int = 503,
        retry_after: int = 1,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        heartbeat_interval: float = 2.0,
        heartbeat_misses: int = 3,
        retries: int = 1,
        retry_methods: Collection[str] = DEFAULT_RETRY_METHODS,
        metrics: EdgeRecorder | None = None,
    ) -> None:
        self.layer = layer
        self.claims = claiming(layer)
        self.routes = routes if isinstance(routes, RouteTable) else RouteTable(routes)
        self.settings = EdgeSettings(
            pickup_timeout=pickup_timeout,
            first_byte_timeout=first_byte_timeout,
            total_timeout=total_timeout,
            no_worker_status=no_worker_status,
            retry_after=retry_after,
            max_body_size=max_body_size,
            heartbeat_interval=heartbeat_interval,
            heartbeat_misses=heartbeat_misses,
            retries=retries,
            retry_methods=retry_methods,
        )
        self.metrics = metrics
        self.liveness: Liveness[EdgeConnection] = Liveness(
            layer,
            "edge",
            self.settings.heartbeat_interval,
            EdgeConnection.peer_lost,
            EdgeConnection.peer_dropped,
        )
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def max_body_size(self) -> int:
        return self.settings.max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind not in ("http", "websocket"):
            raise RuntimeError(f"Distributor cannot serve scope type {kind!r}")
        key = self.routes.match(scope["path"])
        metrics = self.metrics
        if key is None:
            await refuse(scope, send, 404)
            if metrics is not None:
                metrics.finished("", 404, Outcome.NO_ROUTE, 0.0, None)
            return
        connection = EdgeConnection(self.layer, self.settings, self, scope, receive, send, key)
        if metrics is None:
            await connection.run()
            return
        metrics.connection_started()
        try:
            await connection.run()
        except BaseException:
            # The server answers 500 (or closes) for what escapes, as for a local app.
            connection.outcome = Outcome.ERROR
            if connection.status is None:
                connection.status = 500
            raise
        finally:
            metrics.connection_ended()
            metrics.finished(
                key,
                connection.status,
                connection.outcome,
                time.monotonic() - connection.arrived,
                connection.pickup.wait,
            )

    # -- lifespan ----------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Stop the liveness tasks and close the layer's connections in this event loop."""
        await self.liveness.aclose()
        try:
            await self.layer.close()
        except Exception as exc:  # a failing close must not fail the server's shutdown
            logging.getLogger("distributed_asgi.distributor").warning(
                "closing the channel layer failed: %s: %s", type(exc).__name__, exc
            )

    # -- liveness: one heartbeat per Node process and interval (_liveness.py) -----------------

    async def peer_channel(self) -> str:
        return await self.liveness.channel()

    def holding(self, conn_id: str) -> int:
        self.liveness.hold(conn_id)
        return self.liveness.round

    def release(self, conn_id: str) -> None:
        self.liveness.let_go(conn_id)

    def register(self, connection: EdgeConnection) -> None:
        self.liveness.attach(
            connection,
            connection.peer_key,
            connection.window,
            connection.conn_id,
            after=connection.node_round,
            beats_per_connection=connection.beat_id is not None,
        )
        self.liveness.heard(connection.peer_key)  # its accept just came

    def unregister(self, connection: EdgeConnection) -> None:
        self.liveness.detach(connection, connection.peer_key)

    def heard(self, key: str) -> None:
        self.liveness.heard(key)

    def retried(self, key: str) -> None:
        if self.metrics is not None:
            self.metrics.retried(key)
        self.spawn(count_retry(self.layer, key))

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
