"""run_gateway itself: it serves through the edge and the Node, and leaves no task behind."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.gateway.harness import Receive, Scope, Send, run_gateway


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


@pytest.mark.parametrize("over", ["memory", "redis"])
async def test_serves_and_stops_without_leaving_a_task(
    over: str, redis_url: str, prefix: str
) -> None:
    url = redis_url if over == "redis" else None
    before = asyncio.all_tasks()
    async with (
        run_gateway(app, redis_url=url, prefix=prefix) as gw,
        httpx.AsyncClient(base_url=gw.base_url) as http,
    ):
        assert (await http.get("/")).text == "served"
    assert asyncio.all_tasks() == before
