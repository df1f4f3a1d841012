"""The status a client gets when no route, no Node, a full backlog, a too large body or the
application's error stands in the way (DESIGN.md's failure table), in-process with
``run_gateway``. What needs a process killed or a Redis stopped is in test_failures.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from distributed_asgi import Node
from distributed_asgi.layers import RedisChannelLayer
from tests.gateway.harness import Receive, Scope, Send, eventually, run_gateway

# A route key no Node listens on: the harness's Node takes "app" only.
NOBODY = "nobody"


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello, world"})


def client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=20)


async def test_no_route_is_404_at_the_edge_for_http_and_websocket() -> None:
    async with run_gateway(hello, routes=[("^/api/", "app")]) as gw, client(gw.base_url) as http:
        response = await http.get("/static/x")
        with pytest.raises(InvalidStatus) as info:
            await connect(gw.ws_url("/ws"))
    assert response.status_code == 404
    assert response.text == "Not Found"
    # Through the WebSocket denial extension.
    assert info.value.response.status_code == 404


async def test_no_node_is_503_with_retry_after_after_the_pickup_timeout() -> None:
    async with (
        run_gateway(hello, routes=[("^/", NOBODY)], pickup_timeout=0.5, retry_after=7) as gw,
        client(gw.base_url) as http,
    ):
        response = await http.get("/hello")
        with pytest.raises(InvalidStatus) as info:
            await connect(gw.ws_url("/ws"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert info.value.response.status_code == 503


async def test_no_worker_status_is_configurable_as_in_the_seed() -> None:
    async with (
        run_gateway(hello, routes=[("^/", NOBODY)], pickup_timeout=0.3, no_worker_status=405) as gw,
        client(gw.base_url) as http,
    ):
        assert (await http.get("/hello")).status_code == 405


async def test_a_late_node_does_not_run_an_expired_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(scope["path"])
        await hello(scope, receive, send)

    caplog.set_level(logging.INFO, logger="distributed_asgi")
    async with (
        run_gateway(app, routes=[("^/", "late")], pickup_timeout=0.3) as gw,
        client(gw.base_url) as http,
    ):
        assert (await http.get("/late")).status_code == 503
        # A Node that starts now pops the expired connect, logs it, never starts the app.
        late = Node(app=app, keys=["late"], layer=gw.distributor.layer, lifespan="off")
        serving = asyncio.ensure_future(late.arun())
        try:
            await eventually(lambda: "pick-up deadline passed" in caplog.text)
        finally:
            late.stop()
            await asyncio.wait_for(serving, 20)
    assert ran == []


async def test_app_exception_is_500_and_the_node_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/error-before":
            raise ValueError("boom before the response")
        if scope["path"] == "/error-after":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise ValueError("boom after the response started")
        await hello(scope, receive, send)

    async with run_gateway(app) as gw, client(gw.base_url) as http:
        response = await http.get("/error-before")
        assert response.status_code == 500
        assert response.text == "Internal Server Error"
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/error-after")
        assert (await http.get("/hello")).text == "hello, world"
    assert "ValueError: boom before the response" in caplog.text
    assert "Traceback" in caplog.text
    assert "ValueError: boom after the response started" in caplog.text


async def test_body_over_the_limit_is_413() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        length, more_body = 0, True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":  # the edge refused the body
                return
            length += len(message["body"])
            more_body = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(length).encode()})

    async def chunks() -> AsyncIterator[bytes]:
        # Chunked, no content-length: the edge counts as the body comes. Written at once, so
        # the whole body is sent before uvicorn answers and closes the connection.
        for _ in range(5):
            yield b"y" * 400

    async with run_gateway(app, max_body_size=1000) as gw, client(gw.base_url) as http:
        assert (await http.post("/upload", content=b"x" * 1001)).status_code == 413
        assert (await http.post("/upload", content=chunks())).status_code == 413
        assert (await http.post("/upload", content=b"x" * 1000)).text == "1000"


async def test_full_route_channel_is_503_at_once(redis_url: str, prefix: str) -> None:
    async with (
        run_gateway(
            hello,
            redis_url=redis_url,
            prefix=prefix,
            routes=[("^/", NOBODY)],
            layer_options={"channel_capacity": {NOBODY: 1}},
            pickup_timeout=2,
        ) as gw,
        client(gw.base_url) as http,
    ):
        waiting = asyncio.ensure_future(http.get("/hello"))  # fills the one slot: no Node takes it
        await eventually(lambda: _queued(redis_url, prefix), what="a queued connect")
        response = await http.get("/hello")
        # Answered while the first still waits for its pick-up: at once, not at the timeout.
        assert not waiting.done()
        assert response.status_code == 503
        assert "retry-after" in response.headers
        assert (await waiting).status_code == 503


async def _queued(redis_url: str, prefix: str) -> bool:
    """Whether a connect waits on the NOBODY channel (the layer's own view of its backlog)."""
    import redis.asyncio as redis

    connection = redis.Redis.from_url(redis_url)
    try:
        return any([key async for key in connection.scan_iter(f"{prefix}*{NOBODY}*")])
    finally:
        await connection.aclose()


async def test_garbage_on_the_route_channel_is_dropped_and_the_node_keeps_serving(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        run_gateway(hello, redis_url=redis_url, prefix=prefix) as gw,
        client(gw.base_url) as http,
    ):
        layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
        await layer.send("app", {"v": 99, "t": "connect"})
        await layer.send("app", {"hello": b"\x00"})
        await layer.close()
        assert (await http.get("/hello")).text == "hello, world"
    assert "unsupported frame version 99" in caplog.text
    assert "unsupported frame version None" in caplog.text
