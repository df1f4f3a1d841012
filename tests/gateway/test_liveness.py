"""Liveness is a matter between processes: idle connections cost Redis nothing per connection.

Each test opens WebSockets through a whole gateway (run_gateway over a real Redis, short
heartbeat intervals) and counts what Redis executed while they were idle (``INFO
commandstats``, this test's own INFO and CONFIG calls aside).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from tests.gateway.harness import Receive, Scope, Send, run_gateway

INTERVAL = 0.2  # the edge's and the Node's heartbeat interval
IDLE = 1.5  # seconds of idleness measured: 7.5 intervals, 2.5 windows
# What the two processes may do per idle window besides one beat each way (the blocking
# reads' timeouts, presence): generous, it must not grow with the connections.
SLACK = 40


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "websocket"
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text")})
        else:
            return


def _calls(stats: dict[str, Any]) -> int:
    """Commands executed, the counting's own aside."""
    return sum(
        int(entry["calls"])
        for name, entry in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config")
    )


async def _echoes(socket: ClientConnection, text: str) -> bool:
    await socket.send(text)
    return await asyncio.wait_for(socket.recv(), 10) == text


async def _idle_commands(redis_url: str, prefix: str, connections: int) -> tuple[int, bool]:
    """Redis commands executed while ``connections`` WebSockets were idle for IDLE seconds,
    and whether each still echoed afterwards (more than a window later)."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with (
            run_gateway(
                echo,
                redis_url=redis_url,
                prefix=prefix,
                heartbeat_interval=INTERVAL,
                node_options={"heartbeat_interval": INTERVAL},
            ) as gw,
            contextlib.AsyncExitStack() as stack,
        ):
            sockets = [
                await stack.enter_async_context(connect(gw.ws_url(), ping_interval=None))
                for _ in range(connections)
            ]
            assert all([await _echoes(s, "before") for s in sockets])
            await asyncio.sleep(INTERVAL * 2)  # the first beats to new peers are behind us
            await redis.config_resetstat()
            await asyncio.sleep(IDLE)
            calls = _calls(await redis.info("commandstats"))
            alive = all([await _echoes(s, "after") for s in sockets])
    finally:
        await redis.aclose()
    return calls, alive


async def test_idle_websockets_cost_redis_the_same_whatever_their_number(
    redis_url: str, prefix: str
) -> None:
    one, one_alive = await _idle_commands(redis_url, prefix + "one:", 1)
    many, many_alive = await _idle_commands(redis_url, prefix + "many:", 40)
    assert one_alive and many_alive
    # One beat per process and interval each way is ~15 frames here; 40 connections beating
    # each would be ~600 frames, thousands of commands.
    assert many <= one + SLACK, (one, many)


async def test_idle_websockets_outlive_many_heartbeat_windows(redis_url: str, prefix: str) -> None:
    # The process heartbeats alone keep both ends believing in each other: nothing is given up.
    _, alive = await _idle_commands(redis_url, prefix, 5)
    assert alive
