"""examples/starlette_app served through the gateway, driven by real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio

import httpx
import websockets

from tests.examples.conftest import Start

APP = "examples.starlette_app.app:app"


async def test_http_routes(gateway: Start) -> None:
    with gateway(APP) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=20) as client:
            page = await client.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert f"Served by worker {served.worker_pid}" in page.text

            hello = await client.get("/api/hello", params={"name": "café & co"})
            assert hello.status_code == 200
            data = hello.json()
            assert data["message"] == "Hello, café & co!"
            # Served by the worker process, with the lifespan state it set up at start.
            assert data["worker_pid"] == served.worker_pid
            assert data["worker_up_for"] >= 0

            body = bytes(range(256)) * 4096  # 1 MiB, every byte value
            echo = await client.post(
                "/api/echo", content=body, headers={"content-type": "application/octet-stream"}
            )
            assert echo.status_code == 200
            assert echo.content == body

            chunks = []
            async with client.stream("GET", "/api/stream") as response:
                async for chunk in response.aiter_text():
                    chunks.append(chunk)
            assert "".join(chunks) == "".join(f"chunk {n}\n" for n in range(1, 6))

            missing = await client.get("/nope")
            assert missing.status_code == 404
            wrong_method = await client.get("/api/echo")
            assert wrong_method.status_code == 405


async def test_websocket_echo(gateway: Start) -> None:
    with gateway(APP) as served:
        url = served.url.replace("http://", "ws://") + "/ws"
        async with websockets.connect(url, open_timeout=20) as ws:
            greeting = await asyncio.wait_for(ws.recv(), 20)
            assert greeting == f"connected to worker {served.worker_pid}"
            for text in ["hello", "ünïcødé", "x" * 100_000]:
                await ws.send(text)
                assert await asyncio.wait_for(ws.recv(), 20) == f"echo: {text}"
            await ws.send(b"\x00\xffbinary")
            assert await asyncio.wait_for(ws.recv(), 20) == b"\x00\xffbinary"
