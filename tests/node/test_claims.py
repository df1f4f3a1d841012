"""A claimed connection (core/claims.py), played against a real Node and a real Redis.

The test is the edge: it sends the connect asking for a claim and reads the reply channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from distributed_asgi import Node
from distributed_asgi.core.claims import EDGE_HOLDER, parse_holder
from distributed_asgi.core.frames import Accept, Asgi, Connect, Frame, decode_frame, encode
from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.node import acceptance
from distributed_asgi.node.acceptance import Acceptance
from distributed_asgi.node.connection import NodeConnection
from tests.gateway.harness import Receive, Scope, Send
from tests.support import WrappedLayer

SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": []}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


class _CountedPushes(WrappedLayer):
    """A real Redis layer that lists the frames pushed, and may claim late."""

    def __init__(self, layer: RedisChannelLayer, claim_delay: float = 0.0) -> None:
        super().__init__(layer)
        self.claim_delay = claim_delay
        self.pushed: list[tuple[str, str]] = []  # (channel, frame kind)

    def to(self, channel: str) -> list[str]:
        return [kind for to, kind in self.pushed if to == channel]

    async def push(self, channel: str, message: dict[str, Any]) -> None:
        self.pushed.append((channel, str(message.get("t"))))
        await super().push(channel, message)

    async def claim(self, channel: str, holder: str, ttl: float) -> str | None:
        await asyncio.sleep(self.claim_delay)
        held: str | None = await self.layer.claim(channel, holder, ttl)
        return held

    async def holder(self, channel: str) -> str | None:
        held: str | None = await self.layer.holder(channel)
        return held


class _Edge:
    """The test's side: a real layer, a reply channel and a liveness channel."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
        self.reply = ""

    async def connect(self, key: str, *, claim: bool, pickup: float = 5.0) -> str:
        self.reply = await self.layer.new_channel("edge")
        peer = await self.layer.new_channel("edge")
        frame = Connect(
            "c1", dict(SCOPE), self.reply, time.time() + pickup, 30.0, [dict(REQUEST)], peer, 0
        )
        frame.claim = claim
        await self.layer.send(key, encode(frame))
        return self.reply

    async def frames(self, count: int, timeout: float = 10.0) -> list[Frame]:
        return [
            decode_frame(await asyncio.wait_for(self.layer.receive(self.reply), timeout))
            for _ in range(count)
        ]

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.layer.receive(self.reply), seconds)
        except TimeoutError:
            return True
        return False


@contextlib.asynccontextmanager
async def _serving(
    redis_url: str, prefix: str, app: Any, claim_delay: float = 0.0
) -> AsyncIterator[tuple[_Edge, _CountedPushes]]:
    """A real Node serving ``app`` on route "claims", and the test's edge, until the block ends."""
    layer = _CountedPushes(RedisChannelLayer(hosts=[redis_url], prefix=prefix), claim_delay)
    node = Node(app=app, key="claims", layer=layer, lifespan="off")
    running = asyncio.ensure_future(node.arun())
    edge = _Edge(redis_url, prefix)
    try:
        yield edge, layer
    finally:
        node.stop()
        await asyncio.wait_for(running, 10)
        await edge.layer.close()


async def test_a_claimed_request_answered_at_once_is_one_frame(redis_url: str, prefix: str) -> None:
    async with _serving(redis_url, prefix, hello) as (edge, layer):
        reply = await edge.connect("claims", claim=True)
        (frame,) = await edge.frames(1)
        quiet = await edge.nothing_within(0.3)
        server, key = await edge.layer.locate("c", reply)
        (held,) = await server.execute(["GET", key])
    assert isinstance(frame, Accept)
    assert [m["type"] for m in frame.messages] == ["http.response.start", "http.response.body"]
    assert frame.messages[1]["body"] == b"hello"
    assert quiet
    assert layer.to(reply) == ["accept"]
    holder = parse_holder(held.decode())
    assert holder is not None and holder.peer == frame.peer
    assert frame.round is not None and holder.round <= frame.round  # both after it was listed


async def test_an_unclaimed_connect_gets_an_accept_frame_first(redis_url: str, prefix: str) -> None:
    async with _serving(redis_url, prefix, hello) as (edge, layer):
        reply = await edge.connect("claims", claim=False)
        frames = await edge.frames(2)
    assert isinstance(frames[0], Accept) and frames[0].messages == []
    assert isinstance(frames[1], Asgi)
    assert layer.to(reply) == ["accept", "asgi"]


async def test_a_slow_response_gets_its_accept_alone_after_the_hold(
    redis_url: str, prefix: str
) -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.5)
        await hello(scope, receive, send)

    async with _serving(redis_url, prefix, slow) as (edge, _):
        sent = time.monotonic()
        await edge.connect("claims", claim=True)
        (accept,) = await edge.frames(1)
        accepted_after = time.monotonic() - sent
        (response,) = await edge.frames(1)
    assert isinstance(accept, Accept) and accept.messages == []
    assert accepted_after < 0.4  # the hold (50 ms), not the response's 0.5 s
    assert isinstance(response, Asgi) and response.messages[-1]["body"] == b"hello"


async def test_an_application_waiting_for_the_edge_sends_the_accept_first(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its whole body the application waits for the client's disconnect: the edge can
    send it only to a channel the accept names, so the accept goes at once."""
    monkeypatch.setattr(acceptance, "ACCEPT_HOLD", 2.0)  # not sent by the hold
    heard: list[str] = []

    async def listens(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the body
        heard.append((await receive())["type"])
        await hello(scope, receive, send)

    async with _serving(redis_url, prefix, listens) as (edge, _):
        sent = time.monotonic()
        await edge.connect("claims", claim=True)
        (accept,) = await edge.frames(1, timeout=5)
        assert time.monotonic() - sent < 1.0
        assert isinstance(accept, Accept)
        await edge.layer.push(accept.channel, encode(Asgi("c1", [{"type": "http.disconnect"}])))
        await asyncio.sleep(0.3)
    assert heard == ["http.disconnect"]


async def test_a_connection_the_edge_claimed_first_never_starts(
    redis_url: str, prefix: str
) -> None:
    """The Node takes the connect in time but its claim reaches Redis after the edge's (the
    edge gave up at its deadline): the edge answered 503, so nothing may run."""
    ran: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(scope["path"])
        await hello(scope, receive, send)

    async with _serving(redis_url, prefix, app, claim_delay=1.0) as (edge, layer):
        reply = await edge.connect("claims", claim=True, pickup=0.3)
        await asyncio.sleep(0.5)  # the Node has the connect and waits on its claim
        won = await edge.layer.claim(reply, EDGE_HOLDER, 60)
        quiet = await edge.nothing_within(1.5)
    assert won is None
    assert quiet
    assert ran == []
    assert layer.to(reply) == []


async def test_a_served_connection_is_freed_without_the_garbage_collector(
    redis_url: str, prefix: str
) -> None:
    """No reference cycle through a connection: a cycle per request leaves its scope, frames
    and buffers to the collector, which then runs often and long under load."""
    async with _serving(redis_url, prefix, hello) as (edge, _):
        gc.collect()
        gc.disable()
        try:
            for claim in (True, False):
                await edge.connect("claims", claim=claim)
                await edge.frames(1 if claim else 2)
            await asyncio.sleep(0.2)  # the connections' tasks end after their last frame
            left = [o for o in gc.get_objects() if isinstance(o, (NodeConnection, Acceptance))]
        finally:
            gc.enable()
    assert left == []
