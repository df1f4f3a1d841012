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
import http
import logging
import os
import re
import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from distributed_asgi.core.routing import RouteTable
from distributed_asgi.core.types import Receive, Scope, Send
from distributed_asgi.edge.connection import EdgeConnection, RemoteApplicationError, refuse
from distributed_asgi.layers import GatewayLayer, RedisChannelLayer

if TYPE_CHECKING:
    from distributed_asgi.ops.metrics import EdgeMetrics

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_MAX_BODY_SIZE",
    "ROUTE_CHANNELS",
    "Distributor",
    "RemoteApplicationError",
    "build_layer",
    "create_path_distributor",
    "with_backlog",
]


DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024

# Connections that may wait in one route channel for a Node. A route channel is a gateway's
# queue, not a consumer's inbox: it must take a burst (every client of every edge arriving at
# once) while the Nodes take their connects, so the layer's per-channel default (100, the
# Channels default for consumer channels) is far too small. Each waiting connect expires at
# its pickup deadline, so the backlog is bounded in time as well: 1000 is five seconds of
# 200 new connections a second beyond what the Nodes take, about 1-2 MB of Redis memory for
# bodiless requests (a connect carries its scope and, when already there, its first body chunk).
DEFAULT_BACKLOG = 1000

# The channels the edge queues connects on: every name without "!". The edge's and Nodes'
# process-specific channels (reply inboxes, per-connection frames) keep the layer's capacity,
# which is their flow control.
ROUTE_CHANNELS = re.compile(r"[^!]*\Z")


def with_backlog(
    backlog: int, channel_capacity: Mapping[str | re.Pattern[str], int] | None = None
) -> dict[str | re.Pattern[str], int]:
    """``channel_capacity`` rules with route channels bounded by ``backlog``; the rules given
    come first, so a rule naming a route channel wins (first match wins)."""
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be a positive whole number of connections, got {backlog!r}")
    return {**(channel_capacity or {}), ROUTE_CHANNELS: backlog}


def build_layer(
    host: str | None = None,
    port: int | str | None = None,
    db: int = 0,
    password: str | None = None,
    *,
    url: str | None = None,
    layer: GatewayLayer | None = None,
    layer_options: Mapping[str, Any] | None = None,
    backlog: int | None = None,
) -> GatewayLayer:
    """The channel layer for these connection settings (shared by the edge and the Node).

    ``url``, else ``REDIS_URL`` when neither host nor port is given, else host/port/db/password
    (localhost:6379 by default). Route channels (names without ``!``) hold up to ``backlog``
    connects (``DEFAULT_BACKLOG`` when None) unless ``layer_options["channel_capacity"]`` names
    them; a ready ``layer`` is used as it is.
    """
    if layer is not None:
        if url is not None or host is not None or port is not None or password is not None:
            raise ValueError("pass either layer= or Redis connection settings, not both")
        if backlog is not None:
            raise ValueError(
                "backlog applies to a layer built here; with layer=, give the route channels "
                "a capacity with that layer's channel_capacity"
            )
        return layer
    options = dict(layer_options or {})
    options["channel_capacity"] = with_backlog(
        DEFAULT_BACKLOG if backlog is None else backlog, options.get("channel_capacity")
    )
    if url is not None and (host is not None or port is not None or password is not None):
        raise ValueError("pass either url= or host/port/password, not both")
    if url is None and host is None and port is None:
        url = os.environ.get("REDIS_URL") or None
    if url is not None:
        return RedisChannelLayer(hosts=[url], **options)
    return RedisChannelLayer(
        host=host or "localhost",
        port=port or 6379,
        db=db,
        password=password,
        **options,
    )


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
    """The seed's entry point: a ``Distributor`` over a Redis layer, routing by path.

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
    - ``heartbeat_interval`` (2 s) and ``heartbeat_misses`` (3): the edge tells idle Nodes it is
      alive this often, and gives up on a Node silent for this many of *its* intervals.
    - ``metrics``: an ``EdgeMetrics`` (``metrics.edge_metrics()``) to count connections in;
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
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.layer = layer
        self.routes = routes if isinstance(routes, RouteTable) else RouteTable(routes)
        self.pickup_timeout = _positive("pickup_timeout", pickup_timeout)
        self.first_byte_timeout = _optional_positive("first_byte_timeout", first_byte_timeout)
        self.total_timeout = _optional_positive("total_timeout", total_timeout)
        if no_worker_status not in {s.value for s in http.HTTPStatus} or no_worker_status < 400:
            raise ValueError(
                f"no_worker_status must be an HTTP error status, got {no_worker_status!r}"
            )
        self.no_worker_status = no_worker_status
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ValueError(f"retry_after must be a whole number of seconds, got {retry_after!r}")
        self.retry_after = retry_after
        if (
            isinstance(max_body_size, bool)
            or not isinstance(max_body_size, int)
            or max_body_size < 0
        ):
            raise ValueError(f"max_body_size must be a number of bytes, got {max_body_size!r}")
        self.max_body_size = max_body_size
        self.heartbeat_interval = _positive("heartbeat_interval", heartbeat_interval)
        if isinstance(heartbeat_misses, bool) or not isinstance(heartbeat_misses, int):
            raise ValueError(
                f"heartbeat_misses must be a positive integer, got {heartbeat_misses!r}"
            )
        self.heartbeat_misses = max(1, heartbeat_misses)
        self.metrics = metrics
        self._connections: dict[str, EdgeConnection] = {}
        self._heartbeats: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

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
                metrics.finished("", 404, "no_route", 0.0, None)
            return
        connection = EdgeConnection(self, scope, receive, send, key)
        if metrics is None:
            await connection.run()
            return
        metrics.in_flight.inc()
        try:
            await connection.run()
        except BaseException:
            # The server answers 500 (or closes) for what escapes, as for a local app.
            connection.outcome = "error"
            if connection.status is None:
                connection.status = 500
            raise
        finally:
            metrics.in_flight.dec()
            metrics.finished(
                key,
                connection.status,
                connection.outcome,
                time.monotonic() - connection.arrived,
                connection.pickup_wait,
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
        """Stop the heartbeat task and close the layer's connections in this event loop."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
            self._heartbeats = None
        try:
            await self.layer.close()
        except Exception as exc:  # a failing close must not fail the server's shutdown
            logging.getLogger("distributed_asgi.distributor").warning(
                "closing the channel layer failed: %s: %s", type(exc).__name__, exc
            )

    # -- heartbeats: one task for all connections, so an idle Node knows the edge is alive ---------

    def register(self, connection: EdgeConnection) -> None:
        self._connections[connection.conn_id] = connection
        if self._heartbeats is None or self._heartbeats.done():
            self._heartbeats = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    def unregister(self, connection: EdgeConnection) -> None:
        self._connections.pop(connection.conn_id, None)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval / 2)
            due = time.monotonic() - self.heartbeat_interval
            sends = [
                c.send_heartbeat()
                for c in list(self._connections.values())
                if c.node_channel is not None and c.last_sent < due
            ]
            if sends:
                await asyncio.gather(*sends)

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _positive(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def _optional_positive(what: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds or None, got {value!r}")
    return float(value)
