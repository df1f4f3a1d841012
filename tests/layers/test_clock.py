"""The servers' time as the layer tells it for plain pushes (layers/clock.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from distributed_asgi.layers import RedisChannelLayer, clock, redis
from distributed_asgi.layers.keys import entry_sent


class SkewedTime:
    """The time module of a machine whose clock is ``skew`` seconds off."""

    def __init__(self, skew: float) -> None:
        self.skew = skew
        self.monotonic = time.monotonic

    def time(self) -> float:
        return time.time() + self.skew


async def test_the_offset_is_learned_once_and_checked_again_when_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []

    async def ask(place: int) -> Any:
        asked.append(place)
        now = time.time() + 100.0  # a server 100 s ahead
        return [str(int(now)).encode(), str(int(now % 1 * 1_000_000)).encode()]

    server = clock.ServerClock(ask)
    assert server.now_ms(0) is None and server.due(0)
    synced = await server.sync(0)
    assert asked == [0]
    assert abs(synced - (time.time() + 100.0) * 1000) < 50
    assert not server.due(0)
    now_ms = server.now_ms(0)
    assert now_ms is not None and abs(now_ms - (time.time() + 100.0) * 1000) < 50
    assert server.now_ms(1) is None  # each place has its own server
    later = time.monotonic() + clock.CHECK_EVERY
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert server.due(0)


async def test_plain_pushes_are_stamped_with_the_servers_clock(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender whose clock is two minutes behind: its messages would be expired on arrival
    (expiry 2 s) if their time were its own."""
    skewed = SkewedTime(-120.0)
    monkeypatch.setattr(clock, "time", skewed)
    monkeypatch.setattr(redis, "time", skewed)
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, expiry=2)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        reply = await layer.new_channel()
        await layer.send("test.skewed", {"to": "normal"})
        await layer.push(reply, {"to": "process"})
        seconds, microseconds = await admin.time()
        server_ms = seconds * 1000 + microseconds // 1000
        for key in (f"{prefix}:q:test.skewed", layer._route(reply)[1][0]):
            stored = await admin.lindex(key, 0)
            assert isinstance(stored, bytes)
            stamp = entry_sent(stored)
            assert stamp is not None and abs(stamp - server_ms) < 1000
        assert await layer.receive("test.skewed") == {"to": "normal"}
        assert await layer.receive(reply) == {"to": "process"}
    finally:
        await admin.aclose()
        await layer.flush()
        await layer.close()
