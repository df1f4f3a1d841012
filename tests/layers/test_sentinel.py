"""A Sentinel hosts entry against a real master and a real sentinel process."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.redis_process import RedisProcess, free_port


@pytest.fixture
def sentinel(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path
) -> Iterator[tuple[RedisProcess, int]]:
    master = redis_factory()
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
    )
    process = subprocess.Popen(
        [master.binary, str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        yield master, port
    finally:
        process.terminate()
        process.wait(5)


async def test_layer_finds_the_master_through_sentinel(
    sentinel: tuple[RedisProcess, int], prefix: str
) -> None:
    _, port = sentinel
    layer = RedisChannelLayer(
        hosts=[{"sentinels": [("127.0.0.1", port)], "master_name": "mymaster"}], prefix=prefix
    )
    try:
        channel = await layer.new_channel()
        await layer.group_add("watchers", channel)
        await layer.group_send("watchers", {"via": "sentinel"})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"via": "sentinel"}
    finally:
        await layer.flush()
        await layer.close()
