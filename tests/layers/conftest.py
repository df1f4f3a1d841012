from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from distributed_asgi.layers import InMemoryChannelLayer, RedisChannelLayer

LayerFactory = Callable[..., Any]


@pytest.fixture(params=["redis", "valkey", "memory"])
async def make_layer(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> AsyncIterator[LayerFactory]:
    """Build layers of the parametrised kind; layers made by one test share Redis keys.

    "redis" is the session's redis-server (or REDIS_URL), "valkey" the embedded valkey-server.
    """
    made: list[Any] = []
    memory: list[InMemoryChannelLayer] = []

    def factory(**options: Any) -> Any:
        if request.param in ("redis", "valkey"):
            url = (
                redis_url
                if request.param == "redis"
                else request.getfixturevalue("valkey_server").url
            )
            layer: Any = RedisChannelLayer(hosts=[url], prefix=prefix, **options)
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
