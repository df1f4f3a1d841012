"""A Node's presence in Redis: what ``distributed-asgi status`` shows about it.

Each Node writes ``P:node:<id>`` (P the layer's prefix) every heartbeat interval with
``SET ... PX`` and a TTL of ``PRESENCE_TTL_BEATS`` intervals, and deletes it on a clean stop, so
a Node that dies without stopping disappears by itself a few seconds later. The value is a JSON
object (readable with ``redis-cli GET``): id, host, pid, keys, capacity per key, version,
started, concurrency, limits (per key, for the keys that have one), priority, priority_share
(null without priority), in_flight, in_use (connections per key), served, errors, heartbeat
(epoch seconds of this write).

Where the keys live is the layer's business: ``layer.locate("node", id)`` gives the server and
the key (``P:node:<id>``, with the layer's hash tag on a Redis Cluster), ``layer.servers()``
every server the status command scans (layers/server.py).

The counters are kept in the Node as plain integers (``NodeStats``) and only read here, once
per interval: serving a request costs no Redis call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from distributed_asgi.layers import GatewayLayer, LayerError, RedisChannelLayer, central_layer
from distributed_asgi.layers.keys import NODE
from distributed_asgi.node.intake import Intake, PriorityIntake

__all__ = [
    "PRESENCE_TTL_BEATS",
    "NodeStats",
    "Presence",
    "new_node_id",
    "node_key_pattern",
]

logger = logging.getLogger("distributed_asgi.node")

_WRITE_ERRORS: tuple[type[Exception], ...] = (LayerError, asyncio.TimeoutError)

# A Node missing this many presence writes in a row is gone (one miss is a slow loop, not death).
PRESENCE_TTL_BEATS = 3


def new_node_id() -> str:
    """host-pid-random: readable in the status view, unique across restarts and machines."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class NodeStats:
    """What a Node counts for its presence and metrics: integers bumped on the hot path."""

    served: int = 0  # connections finished (whatever their status)
    errors: int = 0  # of those, the ones whose application raised
    started: float = field(default_factory=time.time)


def node_key_pattern(layer: RedisChannelLayer) -> str:
    return layer.keys.pattern(NODE)


class Presence:
    """Writes and removes one Node's presence key (failures are logged once, then retried)."""

    def __init__(
        self,
        layer: GatewayLayer,
        node_id: str,
        keys: list[str],
        concurrency: int,
        interval: float,
        stats: NodeStats,
        intake: Intake | None = None,
    ) -> None:
        from distributed_asgi._version import __version__

        self.layer = central_layer(layer)  # None: no presence (the in-memory layer)
        self.node_id = node_id
        self.interval = interval
        self.stats = stats
        self.intake = intake
        self.ttl_ms = max(1, int(interval * PRESENCE_TTL_BEATS * 1000))
        self._static: dict[str, Any] = {
            "id": node_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "keys": list(keys),
            "capacity": {
                key: self.layer.capacity.for_channel(key) if self.layer else None for key in keys
            },
            "version": __version__,
            "started": stats.started,
            "concurrency": concurrency,
            "limits": dict(intake.limits) if intake is not None else {},
            "priority": isinstance(intake, PriorityIntake),
            "priority_share": intake.share if isinstance(intake, PriorityIntake) else None,
        }
        self._failing = False
        self._closed = False
        # A write still on its way when the Node leaves must not land after the delete.
        self._lock: asyncio.Lock | None = None

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def snapshot(self, in_flight: int) -> dict[str, Any]:
        return {
            **self._static,
            "in_flight": in_flight,
            "in_use": dict(self.intake.running) if self.intake is not None else {},
            "served": self.stats.served,
            "errors": self.stats.errors,
            "heartbeat": time.time(),
        }

    async def publish(self, in_flight: int) -> None:
        async with self._locked():
            if not self._closed and self.layer is not None:
                await self._write(in_flight, self.layer)

    @property
    def _timeout(self) -> float:
        # A write that takes longer than the key lives is useless; waiting on it longer would
        # hold up the Node's stop (remove() waits for it) when Redis is unreachable, not down.
        return self.ttl_ms / 1000

    async def _write(self, in_flight: int, layer: RedisChannelLayer) -> None:
        value = json.dumps(self.snapshot(in_flight), separators=(",", ":"))
        try:
            await asyncio.wait_for(self._set(layer, value), self._timeout)
        except _WRITE_ERRORS as exc:
            # The layer logs the outage itself; one line here says status will miss this Node.
            if not self._failing:
                logger.warning("cannot publish this Node's presence: %s", exc)
            self._failing = True
            return
        self._failing = False

    async def remove(self) -> None:
        async with self._locked():
            self._closed = True
            if self.layer is not None:
                with contextlib.suppress(*_WRITE_ERRORS):
                    await asyncio.wait_for(self._delete(self.layer), self._timeout)

    async def _set(self, layer: RedisChannelLayer, value: str) -> None:
        server, key = await layer.locate(NODE, self.node_id)
        await server.execute(("SET", key, value, "PX", self.ttl_ms))

    async def _delete(self, layer: RedisChannelLayer) -> None:
        server, key = await layer.locate(NODE, self.node_id)
        await server.execute(("DEL", key))
