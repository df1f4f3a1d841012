"""RedisLocalChannelLayer: which server each kind of channel really goes through.

The conformance suite runs on it too (the "local" param of ``make_layer``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from distributed_asgi.layers import RedisLocalChannelLayer
from distributed_asgi.layers.cluster import ClusterPlacement
from distributed_asgi.ops.redis_process import RedisClusterProcess, RedisProcess


async def _keys(url: str, prefix: str) -> set[str]:
    client = aioredis.Redis.from_url(url)
    try:
        return {key.decode() async for key in client.scan_iter(match=f"{prefix}:*")}
    finally:
        await client.aclose()


async def test_normal_channels_stay_local_the_rest_goes_central(
    redis_url: str, local_server: RedisProcess, prefix: str
) -> None:
    def machine() -> RedisLocalChannelLayer:
        return RedisLocalChannelLayer(
            hosts=[redis_url], local_hosts=[local_server.unix_url], prefix=prefix
        )

    worker, other = machine(), machine()
    try:
        reply = await other.new_channel()
        await worker.send("http.request", {"reply": reply})
        await worker.group_add("room", reply)
        local_keys = await _keys(local_server.unix_url, prefix)
        central_keys = await _keys(redis_url, prefix)
        assert local_keys == {f"{prefix}:q:http.request"}
        assert f"{prefix}:q:http.request" not in central_keys
        assert {f"{prefix}:g:room", f"{prefix}:gc:room"} <= central_keys

        request = await asyncio.wait_for(other.receive("http.request"), 5)
        await worker.send(request["reply"], {"status": 200})
        await worker.group_send("room", {"room": True})
        assert await asyncio.wait_for(other.receive(reply), 5) == {"status": 200}
        assert await asyncio.wait_for(other.receive(reply), 5) == {"room": True}
    finally:
        await worker.flush()
        await worker.close()
        await other.close()


async def test_a_normal_channel_member_is_reached_from_its_own_machine_only(
    redis_url: str,
    local_server: RedisProcess,
    redis_factory: Callable[..., RedisProcess],
    prefix: str,
) -> None:
    """The documented caveat: normal channels, their group memberships included, are local."""
    elsewhere_server = redis_factory()
    here = RedisLocalChannelLayer(
        hosts=[redis_url], local_hosts=[local_server.unix_url], prefix=prefix
    )
    elsewhere = RedisLocalChannelLayer(
        hosts=[redis_url], local_hosts=[elsewhere_server.url], prefix=prefix
    )
    try:
        await here.group_add("news", "worker.queue")
        await elsewhere.group_send("news", {"from": "elsewhere"})
        await here.group_send("news", {"from": "here"})
        assert await asyncio.wait_for(here.receive("worker.queue"), 5) == {"from": "here"}
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(here.receive("worker.queue"), 0.3)
    finally:
        await here.flush()
        await elsewhere.flush()
        await here.close()
        await elsewhere.close()


def test_local_hosts_is_required() -> None:
    with pytest.raises(ValueError, match="local_hosts is required"):
        RedisLocalChannelLayer(hosts=["redis://localhost:6379"])


def test_a_bad_local_host_is_named() -> None:
    with pytest.raises(ValueError, match=r"local_hosts: hosts\[0\] URL must start with"):
        RedisLocalChannelLayer(hosts=["redis://localhost:6379"], local_hosts=["http://x"])
    with pytest.raises(ValueError, match="expiry"):
        RedisLocalChannelLayer(local_hosts=["unix:///tmp/x.sock"], expiry=0)


async def test_the_central_server_may_be_a_cluster(
    redis_cluster: RedisClusterProcess, local_server: RedisProcess, prefix: str
) -> None:
    layer = RedisLocalChannelLayer(
        hosts=[redis_cluster.url], local_hosts=[local_server.unix_url], prefix=prefix
    )
    try:
        reply = await layer.new_channel()
        await layer.send("http.request", {"reply": reply})
        request = await asyncio.wait_for(layer.receive("http.request"), 5)
        await layer.group_add("room", request["reply"])
        await layer.group_send("room", {"room": True})
        assert await asyncio.wait_for(layer.receive(reply), 5) == {"room": True}
        assert isinstance(layer.central.placement, ClusterPlacement)
    finally:
        await layer.flush()
        await layer.close()
