"""When the edge may send a request to another Node after its Node was lost.

The edge knows what no proxy in front of a worker knows: whether the application's response
had started. So a request whose Node is lost (its silence, or its alive frames no longer
listing the connection) before any of the response reached the client can go back to the
route channel, with a fresh pick-up window, for another Node to serve, when repeating it is
safe:

| condition                                         | why                                     |
|---------------------------------------------------|-----------------------------------------|
| the method is in ``retry_methods`` (GET, HEAD,    | a safe method changes nothing on the    |
| OPTIONS by default)                               | server: running it twice is harmless    |
| the whole request body came with the connect      | the edge still has all of it to resend  |
| nothing of the response reached the client        | a second response cannot follow a first |
| HTTP, not a WebSocket                             | a WebSocket's messages are not replayed |
| the client is still there                         | nobody would read the answer            |
| fewer than ``retries`` retries so far             | a request that kills Nodes stops        |

A request no Node started is never retried here: it is still waiting in the route channel,
or it was answered 503, which already says it never ran. A retry that no Node takes is
answered 502, as the lost Node's request would have been: a 503 would say it never ran.
"""

from __future__ import annotations

import contextlib
import logging

from distributed_asgi._aio import DeadlineExceeded, within
from distributed_asgi.core.frames import describe
from distributed_asgi.core.types import Scope
from distributed_asgi.edge.settings import EdgeSettings
from distributed_asgi.layers import GatewayLayer, LayerError, RedisChannelLayer, central_layer
from distributed_asgi.layers.keys import RETRIES

__all__ = ["COUNT_TIMEOUT", "count_retry", "log_retry", "may_retry"]

logger = logging.getLogger("distributed_asgi.distributor")

# How long counting a retry in Redis may take (in the background) before it is given up.
COUNT_TIMEOUT = 5.0


def may_retry(
    settings: EdgeSettings,
    scope: Scope,
    *,
    retried: int,
    whole: bool,
    response_started: bool,
    client_gone: bool,
) -> bool:
    """Whether a request whose Node was lost may go to another Node (the table above)."""
    return (
        retried < settings.retries
        and scope["type"] == "http"
        and whole
        and not response_started
        and not client_gone
        and scope.get("method") in settings.retry_methods
    )


def log_retry(scope: Scope, retried: int, settings: EdgeSettings, node: str) -> None:
    logger.warning(
        "retrying %s on another Node (retry %d of %d): the Node %s was lost before it answered",
        describe(scope),
        retried,
        settings.retries,
        node,
    )


async def count_retry(layer: GatewayLayer, key: str) -> None:
    """Count a retry of route ``key`` in Redis (``P:r:<key>``), where ``distributed-asgi
    status`` reads it; nothing for a layer without Redis. A count that fails is only a count:
    it is dropped."""
    shared = central_layer(layer)
    if shared is None:
        return
    with contextlib.suppress(LayerError, DeadlineExceeded):
        await within(COUNT_TIMEOUT, _increment(shared, key))


async def _increment(layer: RedisChannelLayer, key: str) -> None:
    server, name = await layer.locate(RETRIES, key)
    await server.execute(("INCR", name))
