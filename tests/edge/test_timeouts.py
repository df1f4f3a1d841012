"""The edge's HTTP timeouts: first byte and total (504), and what the application hears."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.edge.apps import endless_app
from tests.gateway.harness import Receive, Scope, Send, run_gateway


def _slow_app(heard: asyncio.Queue[str]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Answers after the ``sleep`` header's seconds unless told first; reports what it heard."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seconds = float(dict(scope["headers"]).get(b"sleep", b"0"))
        first = await receive()  # the (empty) request body, unless the edge gave up already
        if first["type"] == "http.disconnect":
            await heard.put(first["type"])
            return
        try:
            message = await asyncio.wait_for(receive(), seconds)
        except asyncio.TimeoutError:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"slow answer"})
            return
        await heard.put(message["type"])

    return app


async def test_no_first_byte_in_time_is_504_and_the_app_hears_a_disconnect() -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with (
        run_gateway(_slow_app(heard), first_byte_timeout=0.6) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http,
    ):
        response = await http.get("/slow", headers={"sleep": "30"})
        assert response.status_code == 504
        assert response.text == "Gateway Timeout"
        assert await asyncio.wait_for(heard.get(), 10) == "http.disconnect"
        # A request that answers in time is untouched by the timeout.
        response = await http.get("/slow", headers={"sleep": "0.1"})
        assert response.text == "slow answer"


async def test_response_not_complete_in_total_time_closes_the_connection() -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    received = 0
    async with (
        run_gateway(endless_app(heard), total_timeout=1.0) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("GET", "/endless") as response:
                assert response.status_code == 200
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
        assert received > 0  # it was streaming until the limit
        assert await asyncio.wait_for(heard.get(), 10) == "http.disconnect"


async def test_total_timeout_before_the_response_started_is_504() -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with (
        run_gateway(_slow_app(heard), total_timeout=0.6, first_byte_timeout=None) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http,
    ):
        response = await http.get("/slow", headers={"sleep": "30"})
        assert response.status_code == 504
        assert await asyncio.wait_for(heard.get(), 10) == "http.disconnect"
