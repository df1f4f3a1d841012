"""The channel layer the edge and the Node build from their connection settings.

``build_layer(url=...)`` (or host/port/db/password, or ``REDIS_URL``) is a ``RedisChannelLayer``
whose route channels (every name without ``!``) hold ``backlog`` connects; ``layer=`` passes a
ready layer through. ``with_backlog()`` gives the ``channel_capacity`` rules that bound the route
channels, for a layer built by hand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .base import GatewayLayer
from .redis import RedisChannelLayer

__all__ = ["DEFAULT_BACKLOG", "ROUTE_CHANNELS", "build_layer", "with_backlog"]

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
