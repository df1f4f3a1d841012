"""What clients get when a process dies or Redis goes away (DESIGN.md's failure table): the
cases that need a real process killed or a server stopped. The statuses that need neither are
in test_status_codes.py, in-process."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from distributed_asgi.ops.redis_process import RedisProcess
from tests.gateway.fixtures import Gateway


def test_node_dying_mid_request_is_502(gateway: Gateway) -> None:
    gateway.start_edge(retries=0)  # with retries, tests/gateway/test_retries.py
    node, _ = gateway.start_node(heartbeat_interval=0.3)
    with httpx.Client(base_url=gateway.url(), timeout=20) as http:
        killer_started = time.monotonic()

        def kill_when_started() -> None:
            gateway.wait_marker("dying")
            # Past the accept delay: the edge knows this Node has the connection. (A Node
            # killed before its accept leaves the edge answering 503, as if nobody took it.)
            time.sleep(0.3)
            os.kill(node.pid, signal.SIGKILL)

        thread = threading.Thread(target=kill_when_started)
        thread.start()
        response = http.get("/pid", params={"sleep": 30, "marker": "dying"})
        thread.join()
    assert response.status_code == 502
    assert time.monotonic() - killer_started < 10


def test_edge_dying_mid_websocket_reaches_the_app_as_1006(gateway: Gateway) -> None:
    edge = gateway.start_edge(heartbeat_interval=0.3)
    gateway.start_node()
    with connect(gateway.url("/ws?marker=edge-died", "ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
        edge.kill()
        assert gateway.wait_marker("edge-died") == "1006"


def test_node_dying_mid_websocket_closes_with_1011(gateway: Gateway) -> None:
    gateway.start_edge()
    node, _ = gateway.start_node(heartbeat_interval=0.3)
    with connect(gateway.url("/ws", "ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
        node.kill()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1011


def test_redis_outage_fails_fast_with_503_then_recovers(
    redis_factory: Callable[..., RedisProcess], prefix: str, tmp_path: Path
) -> None:
    server = redis_factory()
    gateway = Gateway(server.url, prefix, tmp_path)
    try:
        gateway.start_edge(pickup_timeout=2)
        gateway.start_node()
        with httpx.Client(base_url=gateway.url(), timeout=10) as http:
            assert http.get("/hello").status_code == 200
            server.stop()
            started = time.monotonic()
            assert http.get("/hello").status_code == 503
            assert time.monotonic() - started < 2.5
            server.start()
            deadline = time.monotonic() + 15
            status = 0
            while time.monotonic() < deadline and status != 200:
                status = http.get("/hello").status_code
        assert status == 200
    finally:
        gateway.stop()


def test_redis_lost_mid_request_before_any_response_is_502(
    redis_factory: Callable[..., RedisProcess], prefix: str, tmp_path: Path
) -> None:
    """The application had started (the Node accepted and read the first chunk): losing Redis
    then is a failed gateway, 502, never a 503 (which would invite a retry) nor a 500."""
    server = redis_factory()
    gateway = Gateway(server.url, prefix, tmp_path)
    try:
        gateway.start_edge(heartbeat_interval=5)
        gateway.start_node(heartbeat_interval=5)

        def body() -> Iterator[bytes]:
            yield b"x" * 1000
            gateway.wait_marker("upload-paused")
            server.stop()
            yield b"y" * 1000

        response = httpx.post(
            gateway.url("/slow-upload"),
            params={"marker": "upload-paused", "pause": 30},
            content=body(),
            timeout=30,
        )
        assert response.status_code == 502, gateway.logs()[-3000:]
        assert "lost Redis while forwarding POST /slow-upload" in gateway.logs()
    finally:
        gateway.stop()
