"""One Redis server of a layer, for code that reads or writes beside the layer's own keys.

The presence of a Node (node/presence.py) and ``distributed-asgi status`` (ops/status.py) use
this and the layer's two placement methods, never the layer's internals or redis-py:

- ``await layer.servers()``: every server the layer writes to (each shard; every master of a
  Redis Cluster), e.g. to ``scan()`` them all.
- ``await layer.locate(kind, name)``: ``(server, key)`` for the key of ``kind`` (``"q"`` a
  channel's queue, ``"node"`` a Node's presence) named ``name``, on the server that holds it,
  hash tag included on a cluster.

Errors are the layer's own (``LayerUnavailable``, ``LayerRefused``), as from the layer itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .shard import Shard, translated

__all__ = ["Server"]


class Server:
    """A view of one server of a layer: plain commands on the layer's connection pool."""

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    @property
    def name(self) -> str:
        """The server as logs show it (password masked)."""
        return self._shard.spec.describe()

    async def execute(self, *commands: Sequence[Any]) -> list[Any]:
        """Run ``commands`` in one round trip (not as a transaction); their replies in order.

        An error reply of any of them raises ``LayerRefused``.
        """
        with translated():
            async with self._shard.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return list(await pipe.execute())

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching ``pattern`` (SCAN, never KEYS: the server keeps serving)."""
        with translated():
            return [key async for key in self._shard.client.scan_iter(match=pattern, count=1000)]

    def __repr__(self) -> str:
        return f"<Server {self.name}>"
