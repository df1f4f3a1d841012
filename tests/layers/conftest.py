from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from distributed_asgi.layers import (
    InMemoryChannelLayer,
    RedisChannelLayer,
    RedisLocalChannelLayer,
)

LayerFactory = Callable[..., Any]


@pytest.fixture(params=["redis", "valkey", "memory", "cluster", "local"])
async def make_layer(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> AsyncIterator[LayerFactory]:
    """Build layers of the parametrised kind; layers made by one test share Redis keys.

    "redis" is the session's redis-server (or REDIS_URL), "valkey" the embedded valkey-server,
    "cluster" a three-master Redis Cluster, "local" RedisLocalChannelLayer with the session's
    server as the central one and a unix-socket server as the machine-local one.
    """
    made: list[Any] = []
    memory: list[InMemoryChannelLayer] = []

    def factory(**options: Any) -> Any:
        layer: Any
        if request.param in ("redis", "valkey", "cluster"):
            if request.param == "redis":
                url = redis_url
            elif request.param == "valkey":
                url = request.getfixturevalue("valkey_server").url
            else:
                url = request.getfixturevalue("redis_cluster").url
            layer = RedisChannelLayer(hosts=[url], prefix=prefix, **options)
        elif request.param == "local":
            local = request.getfixturevalue("local_server").unix_url
            layer = RedisLocalChannelLayer(
                hosts=[redis_url], local_hosts=[local], prefix=prefix, **options
            )
        else:
            # One in-memory layer is one process: several "instances" share it.
            if not memory:
                memory.append(InMemoryChannelLayer(**options))
            layer = memory[0]
        made.append(layer)
        return layer

    yield factory
    if made:
        await made[0].flush()
    for layer in made:
        await layer.close()
