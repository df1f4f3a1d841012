"""The 503 contract (DESIGN.md): a 503 with Retry-After means no application code ran.

A Node writes its accept to Redis before the application's first line runs, so a Node killed
once the application has started leaves the edge answering 502, never 503; and a Node killed
before it accepted leaves a 503 and an application that never ran.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import httpx

from distributed_asgi import Node
from distributed_asgi.core.claims import EDGE_HOLDER
from distributed_asgi.core.frames import Accept, Connect, End, decode_frame, encode
from distributed_asgi.layers import RedisChannelLayer
from tests.gateway.fixtures import Gateway
from tests.support import WrappedLayer

CONTRACT_APP = "tests.gateway.apps.contract:app"


def _post_in_thread(url: str, results: dict[str, Any], name: str) -> threading.Thread:
    def post() -> None:
        started = time.monotonic()
        response = httpx.post(url, content=b"not idempotent", timeout=30)
        results[name] = (response.status_code, response.headers.get("retry-after"))
        results[name + "-seconds"] = time.monotonic() - started

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def test_a_node_killed_once_the_app_started_gives_502_not_503(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=5)
    node, _ = gateway.start_node(app=CONTRACT_APP, heartbeat_interval=0.3, lifespan="off")
    results: dict[str, Any] = {}
    # The app blocks the Node's event loop right after its first line: nothing the Node has
    # not written before starting the app can be written after.
    thread = _post_in_thread(gateway.url("/block/started?seconds=30"), results, "started")
    gateway.wait_marker("ran-started")
    os.kill(node.pid, signal.SIGKILL)
    killed = time.monotonic()
    thread.join()
    print(f"502 {time.monotonic() - killed:.2f}s after the kill")
    assert results["started"] == (502, None)


def test_a_node_killed_before_it_accepted_gives_503_and_never_ran_the_app(
    gateway: Gateway,
) -> None:
    """The Node pops the second connect (its blocking pop is out while the first request's
    app blocks its event loop) but is killed before it can run anything for it."""
    gateway.start_edge(pickup_timeout=4, retry_after=3)
    node, _ = gateway.start_node(app=CONTRACT_APP, heartbeat_interval=0.3, lifespan="off")
    results: dict[str, Any] = {}
    first = _post_in_thread(gateway.url("/block/first?seconds=30"), results, "first")
    gateway.wait_marker("ran-first")
    second = _post_in_thread(gateway.url("/hold/second?seconds=0"), results, "second")
    time.sleep(1.0)  # the edge has sent the second connect; the Node's pending pop took it
    os.kill(node.pid, signal.SIGKILL)
    # A healthy Node now: had the connect still been in Redis, it would run it in time.
    gateway.start_node(app=CONTRACT_APP, lifespan="off")
    first.join()
    second.join()
    print(f"first: {results['first-seconds']:.2f}s, second: {results['second-seconds']:.2f}s")
    assert results["first"] == (502, None)
    assert results["second"] == (503, "3")
    assert not gateway.marker("ran-second").exists()


class _SlowAccepts(WrappedLayer):
    """A real Redis layer whose ``accept`` frames reach Redis ``delay`` seconds late."""

    def __init__(self, layer: RedisChannelLayer, delay: float) -> None:
        super().__init__(layer)
        self.delay = delay

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if message.get("t") == "accept":
            await asyncio.sleep(self.delay)
        await super().send(channel, message)

    async def push(self, channel: str, message: dict[str, Any]) -> None:
        if message.get("t") == "accept":
            await asyncio.sleep(self.delay)
        await super().push(channel, message)


async def test_an_accept_that_reached_redis_after_the_edge_gave_up_never_starts_the_app(
    redis_url: str, prefix: str
) -> None:
    ran: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        ran.append(scope["path"])

    edge = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    node = Node(
        app=app,
        key="slow",
        layer=_SlowAccepts(RedisChannelLayer(hosts=[redis_url], prefix=prefix), 1.5),
        lifespan="off",
    )
    running = asyncio.ensure_future(node.arun())
    try:
        reply = await edge.new_channel("edge")
        scope = {"type": "http", "method": "POST", "path": "/late", "headers": []}
        # Taken in time, but the accept lands past the deadline and the edge's grace.
        await edge.send("slow", encode(Connect("c1", scope, reply, time.time() + 0.3, 30.0)))
        frames = [decode_frame(await asyncio.wait_for(edge.receive(reply), 10)) for _ in "ab"]
    finally:
        node.stop()
        await asyncio.wait_for(running, 10)
        await edge.close()
    assert isinstance(frames[0], Accept)
    assert isinstance(frames[1], End)
    assert frames[1].error is not None and "too late" in frames[1].error
    assert ran == []


# -- a claimed connection (core/claims.py): a whole request, its accept with the response -------


def test_a_node_silent_past_the_pickup_timeout_holds_its_claim_and_answers(
    gateway: Gateway,
) -> None:
    """The Node claims a bodiless GET, then its application blocks the loop past the edge's
    pick-up deadline, so nothing (not even the lone accept) is written meanwhile. The edge's
    own claim finds the Node holding it: it waits for that Node instead of answering 503."""
    gateway.start_edge(pickup_timeout=0.5, retries=0)
    gateway.start_node(app=CONTRACT_APP, heartbeat_interval=1.0, lifespan="off")
    started = time.monotonic()
    response = httpx.get(gateway.url("/block/slow?seconds=1.5"), timeout=30)
    seconds = time.monotonic() - started
    print(f"answered after {seconds:.2f}s")
    assert response.status_code == 200, gateway.logs()[-3000:]
    assert seconds >= 1.5
    assert "sent nothing by the pick-up deadline: waiting for it" in gateway.logs()


def test_a_node_killed_after_its_claim_gives_502_not_503(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=0.5, retries=0)
    node, _ = gateway.start_node(app=CONTRACT_APP, heartbeat_interval=0.3, lifespan="off")
    results: dict[str, Any] = {}

    def get() -> None:
        results["response"] = httpx.get(gateway.url("/block/claimed?seconds=30"), timeout=30)

    thread = threading.Thread(target=get)
    thread.start()
    gateway.wait_marker("ran-claimed")
    os.kill(node.pid, signal.SIGKILL)
    thread.join()
    assert results["response"].status_code == 502


async def test_with_no_node_the_edge_holds_the_claim_it_answered_503_for(
    gateway: Gateway,
) -> None:
    gateway.start_edge(pickup_timeout=0.3, retry_after=2)
    async with httpx.AsyncClient() as client:
        response = await client.get(gateway.url("/nobody"), timeout=30)
    assert (response.status_code, response.headers.get("retry-after")) == (503, "2")
    layer = RedisChannelLayer(hosts=[gateway.redis_url], prefix=gateway.prefix)
    try:
        (server,) = await layer.servers()
        keys = await server.scan(f"{gateway.prefix}:c:*")
        values = [await server.execute(["GET", key]) for key in keys]
    finally:
        await layer.close()
    assert values == [[EDGE_HOLDER.encode()]]
