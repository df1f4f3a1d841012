"""What clients get when something is missing or goes wrong (DESIGN.md's failure table)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from distributed_asgi.ops.redis_process import RedisProcess

from .conftest import Gateway


def test_no_route_is_404_at_the_edge(gateway: Gateway) -> None:
    gateway.start_edge(routes=[["^/api/", "api"]])
    response = httpx.get(gateway.url("/static/x"), timeout=10)
    assert response.status_code == 404
    assert response.text == "Not Found"


def test_no_node_is_503_with_retry_after_after_the_pickup_timeout(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=0.5, retry_after=7)
    started = time.monotonic()
    response = httpx.get(gateway.url("/hello"), timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert 0.4 < elapsed < 3


def test_no_worker_status_is_configurable_as_in_the_seed(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=0.3, no_worker_status=405)
    assert httpx.get(gateway.url("/hello"), timeout=10).status_code == 405


def test_a_late_node_does_not_run_an_expired_connection(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=0.3)
    response = httpx.get(gateway.url("/pid"), params={"sleep": 0.01, "marker": "late"}, timeout=10)
    assert response.status_code == 503
    _, log = gateway.start_node()
    # The Node pops the expired connect, logs it, and never starts the application.
    deadline = time.monotonic() + 10
    while "pick-up deadline passed" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "pick-up deadline passed" in log.read_text()
    assert not gateway.marker("late").exists()


def test_websocket_with_no_node_is_refused(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=0.3)
    with pytest.raises(InvalidStatus) as info:
        connect(gateway.url("/ws", "ws"))
    assert info.value.response.status_code == 503


def test_app_exception_is_500_and_the_node_keeps_serving(gateway: Gateway) -> None:
    gateway.start_edge()
    _, log = gateway.start_node()
    with httpx.Client(base_url=gateway.url(), timeout=10) as http:
        response = http.get("/error-before")
        assert response.status_code == 500
        assert response.text == "Internal Server Error"
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/error-after")
        assert http.get("/hello").text == "hello, world"
    deadline = time.monotonic() + 5
    while "boom after" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = log.read_text()
    assert "ValueError: boom before the response" in text
    assert "Traceback" in text
    assert "ValueError: boom after the response started" in text


def test_body_over_the_limit_is_413(gateway: Gateway) -> None:
    gateway.start_edge(max_body_size=1000)
    gateway.start_node()
    with httpx.Client(base_url=gateway.url(), timeout=10) as http:
        assert http.post("/upload", content=b"x" * 1001).status_code == 413

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(5):
                yield b"y" * 400
                time.sleep(0.05)

        assert http.post("/upload", content=chunks()).status_code == 413
        assert http.post("/upload", content=b"x" * 1000).json()["length"] == 1000


def test_node_dying_mid_request_is_502(gateway: Gateway) -> None:
    gateway.start_edge()
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


def test_full_route_channel_is_503_at_once(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=3, layer={"channel_capacity": {"fidelity": 1}})
    waiting = threading.Thread(target=lambda: httpx.get(gateway.url("/hello"), timeout=10))
    waiting.start()  # its connect fills the one slot (no Node is running)
    time.sleep(0.3)
    started = time.monotonic()
    response = httpx.get(gateway.url("/hello"), timeout=10)
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert time.monotonic() - started < 1.0
    waiting.join()


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


def test_websocket_with_no_route_is_404_through_the_denial_extension(gateway: Gateway) -> None:
    gateway.start_edge(routes=[["^/api/", "api"]])
    with pytest.raises(InvalidStatus) as info:
        connect(gateway.url("/ws", "ws"))
    assert info.value.response.status_code == 404


def test_garbage_on_the_route_channel_is_dropped_and_the_node_keeps_serving(
    gateway: Gateway,
) -> None:
    import asyncio

    from distributed_asgi.layers import RedisChannelLayer

    gateway.start_edge()
    _, log = gateway.start_node()

    async def send_garbage() -> None:
        layer = RedisChannelLayer(hosts=[gateway.redis_url], prefix=gateway.prefix)
        await layer.send("fidelity", {"v": 99, "t": "connect"})
        await layer.send("fidelity", {"hello": b"\x00"})
        await layer.close()

    asyncio.run(send_garbage())
    assert httpx.get(gateway.url("/hello"), timeout=10).text == "hello, world"
    text = log.read_text()
    assert "unsupported frame version 99" in text
    assert "unsupported frame version None" in text


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

        def body():  # type: ignore[no-untyped-def]
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
