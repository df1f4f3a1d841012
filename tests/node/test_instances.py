"""A connection runs in the task that received its connect: what that task owes the Node.

In-process (one ``InMemoryChannelLayer`` shared by the edge and the Node): a failed receive is
retried, a finished instance leaves ``application_instances`` (a failed one stays until the
checker has logged it), and a response body is cut into frames whatever its size.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from distributed_asgi.layers import InMemoryChannelLayer, LayerError
from distributed_asgi.node.framing import MAX_BODY_FRAME
from tests.gateway.harness import KEY, Receive, Scope, Send, eventually, run_gateway


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/fail":
        raise RuntimeError("the application failed")
    size = int(scope["query_string"] or b"5")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * size})


async def test_a_failed_receive_is_logged_and_the_node_reads_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with run_gateway(_hello, node_options={"max_applications": 1}) as gateway:
        layer = gateway.node.layer
        assert isinstance(layer, InMemoryChannelLayer)
        receive = layer.receive
        failed: list[str] = []

        async def failing_once(channel: str) -> dict[str, Any]:
            if channel == KEY and not failed:
                failed.append(channel)
                raise LayerError("Redis went away")
            return await receive(channel)

        layer.receive = failing_once  # type: ignore[method-assign]
        gateway.node.intake.cancel()  # the receive out now is the failing one
        gateway.node.intake.fill()
        await eventually(lambda: bool(failed), what="the failing receive")
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
            assert (await http.get("/")).text == "xxxxx"
    assert "receive on 'app' failed: Redis went away" in caplog.text


async def test_finished_instances_are_let_go_and_failed_ones_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="distributed_asgi.node")
    async with run_gateway(_hello) as gateway:
        node = gateway.node
        node.application_checker_interval = 0.05
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
            for _ in range(3):
                assert (await http.get("/")).status_code == 200
            await eventually(lambda: not node.connections, what="the connections to end")
            assert node.application_instances == {}
            assert (await http.get("/fail")).status_code == 500
        await eventually(
            lambda: "Exception inside application: the application failed" in caplog.text,
            what="the checker to log the failure",
        )
        await eventually(lambda: node.application_instances == {}, what="the checker to reap")


@pytest.mark.parametrize("size", [0, 1, MAX_BODY_FRAME, MAX_BODY_FRAME + 1, 2 * MAX_BODY_FRAME])
async def test_a_body_of_any_size_arrives_whole(size: int) -> None:
    async with (
        run_gateway(_hello) as gateway,
        httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http,
    ):
        response = await http.get(f"/?{size}")
    assert response.status_code == 200
    assert response.content == b"x" * size
