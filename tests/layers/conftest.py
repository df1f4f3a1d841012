from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from distributed_asgi.layers import (
    InMemoryChannelLayer,
    RedisChannelLayer,
    RedisLocalChannelLayer,
)

LayerFactory = Callable[..., Any]


async def assert_cancelled_receives_lose_nothing(
    layer: Any, channel: str, put: Callable[[str, dict[str, Any]], Awaitable[None]]
) -> None:
    """Receives on ``channel`` cancelled at varying points of their pop, each while ``put``
    (a layer's ``send`` or ``push``) writes the next message: each message still arrives."""
    for i in range(20):
        task = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)
        await put(channel, {"i": i})
        await asyncio.sleep(0.001 * (i % 3))  # cancel at varying points of the pop
        task.cancel()
        try:
            received = await task
        except asyncio.CancelledError:
            received = await asyncio.wait_for(layer.receive(channel), 5)
        assert received == {"i": i}


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
