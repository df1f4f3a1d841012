"""Bad input in every key the edge and the Node read, against a real edge and a real Node.

Each kind of bad input (garbage bytes, truncated msgpack, msgpack that is not a dict, a wrong
protocol version, a frame of the wrong kind, an oversized message, an encrypted message where
none is expected, an entry without the layer's header) is put into:

- the route channel (read by the Node),
- the edge's reply channel (the test plays the Node: it takes the connect itself),
- the Node's own channel (the test plays the edge: it sends the connect itself).

Each time the process must log the drop with the channel or key it came from, and serve the
next good message of the same connection and the next good request. Undecryptable messages
with keys configured are in test_security.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgpack
import redis.asyncio as aioredis

from distributed_asgi.core.frames import (
    Accept,
    Asgi,
    Connect,
    Heartbeat,
    decode_frame,
    encode,
)
from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.serialization import MessageSerializer
from tests.gateway.fixtures import Gateway

# Small, so an oversized message is cheap to make; far above anything these requests need.
MAX_SIZE = 100_000
LAYER: dict[str, Any] = {"max_message_size": MAX_SIZE}

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/echo",
    "raw_path": b"/echo",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"test"), (b"content-length", b"5")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}


class RawSerializer(MessageSerializer):
    """Stores ``message["raw"]`` as the payload, byte for byte: how a forger writes a key."""

    def serialize(self, message: dict[str, Any]) -> bytes:
        raw: bytes = message["raw"]
        return raw


def bad_payloads(valid: dict[str, Any]) -> list[tuple[bytes, str]]:
    """(payload, what the log says about it); ``valid`` is a frame that would be accepted."""
    packed = msgpack.packb(valid, use_bin_type=True)
    return [
        (b"\x00\xffgarbage", "unknown message format marker"),
        (b"M" + packed[: len(packed) // 2], "not valid msgpack"),
        (b"M" + msgpack.packb([1, 2, 3]), "message is a list, not a dict"),
        (b"M" + msgpack.packb({**valid, "v": 2}), "unsupported frame version 2"),
        (b"M" + msgpack.packb({**valid, "t": "bogus"}), "unknown frame kind 'bogus'"),
        (b"M" + msgpack.packb({"pad": b"x" * (MAX_SIZE + 1)}), "over max_message_size"),
        (b"F" + b"gAAAAA" + b"A" * 80, "encrypted message but no symmetric_encryption_keys"),
    ]


class Forger:
    """A client with Redis access: writes payloads (or whole entries) into the gateway's keys."""

    def __init__(self, gateway: Gateway) -> None:
        self.raw = RedisChannelLayer(hosts=[gateway.redis_url], prefix=gateway.prefix)
        self.raw.serializer = RawSerializer(max_message_size=None)
        self.layer = RedisChannelLayer(hosts=[gateway.redis_url], prefix=gateway.prefix, **LAYER)
        self.admin = aioredis.Redis.from_url(gateway.redis_url)
        self.prefix = gateway.prefix

    async def payloads(self, channel: str, payloads: list[tuple[bytes, str]]) -> None:
        for payload, _ in payloads:
            await self.raw.send(channel, {"raw": payload})

    async def headerless_entry(self, channel: str) -> str:
        """An entry without the layer's time-and-channel header; returns its Redis key."""
        queue = channel.split("!", 1)[0] + "!" if "!" in channel else channel
        key = f"{self.prefix}:q:{queue}"
        await self.admin.rpush(key, b"no header, no payload")
        return key

    async def close(self) -> None:
        await self.raw.close()
        await self.layer.close()
        await self.admin.aclose()


async def hello(gateway: Gateway) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(gateway.url("/hello"))).text


def wait_for_log(log_text: Callable[[], str], needles: list[str], timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    text = log_text()
    while time.monotonic() < deadline and not all(n in text for n in needles):
        time.sleep(0.05)
        text = log_text()
    missing = [n for n in needles if n not in text]
    assert not missing, f"missing log lines {missing} in:\n{text}"
    return text


def log_lines_naming(text: str, channel: str, needles: list[str]) -> None:
    """Each needle is on a line that also names ``channel``."""
    for needle in needles:
        lines = [line for line in text.splitlines() if needle in line]
        assert any(channel in line for line in lines), (needle, channel, lines)


async def test_route_channel(gateway: Gateway) -> None:
    gateway.start_edge(layer=LAYER)
    _, log = gateway.start_node(layer=LAYER)
    forger = Forger(gateway)
    valid = encode(Connect("c0", SCOPE, "edge.x!y", time.time() + 60, 2.0))
    payloads = bad_payloads(valid)
    try:
        await forger.payloads("fidelity", payloads)
        await forger.raw.send("fidelity", {"raw": b"M" + msgpack.packb(encode(Heartbeat("c0")))})
        # Connects whose reply channel the Node must not write to: never started.
        marked = {**SCOPE, "path": "/pid", "query_string": b"sleep=0.01&marker=started"}
        for reply in ("bad reply name", "fidelity"):
            await forger.layer.send(
                "fidelity", encode(Connect("c1", marked, reply, time.time() + 60, 2.0))
            )
        key = await forger.headerless_entry("fidelity")
    finally:
        await forger.close()
    async with httpx.AsyncClient(base_url=gateway.url(), timeout=10) as http:
        for _ in range(3):
            assert (await http.get("/hello")).text == "hello, world"
    needles = [needle for _, needle in payloads] + [
        "dropped a Heartbeat frame on route channel",
        "frame field 'reply': Channel name must be ASCII letters",
        "frame field 'reply' must be a process-specific channel, got 'fidelity'",
    ]
    text = wait_for_log(log.read_text, [*needles, f"dropped a malformed entry from {key}"])
    log_lines_naming(text, "fidelity", needles)
    assert not gateway.marker("started").exists()


async def test_edge_reply_channel(gateway: Gateway) -> None:
    """The test takes the connect in place of a Node and answers through bad input."""
    gateway.start_edge(layer=LAYER, pickup_timeout=10)
    forger = Forger(gateway)
    try:
        async with httpx.AsyncClient(base_url=gateway.url(), timeout=20) as http:
            request = asyncio.ensure_future(http.post("/echo", content=b"hello"))
            connect = decode_frame(await asyncio.wait_for(forger.layer.receive("fidelity"), 10))
            assert isinstance(connect, Connect)
            reply = connect.reply_channel
            node_channel = await forger.layer.new_channel("node")
            valid_accept = encode(Accept(connect.conn_id, node_channel, 2.0))
            during_pickup = bad_payloads(valid_accept)
            await forger.payloads(reply, during_pickup)
            # A wrong kind of frame while the edge waits for an accept.
            await forger.layer.send(reply, encode(Asgi(connect.conn_id, [])))
            key = await forger.headerless_entry(reply)
            await forger.layer.send(reply, valid_accept)
            # The connection now runs: bad input again, then the response.
            response_frame = encode(
                Asgi(
                    connect.conn_id,
                    [
                        {"type": "http.response.start", "status": 200, "headers": []},
                        {"type": "http.response.body", "body": b"served"},
                    ],
                )
            )
            running = bad_payloads(response_frame)
            await forger.payloads(reply, running)
            await forger.layer.send(reply, valid_accept)  # an accept is wrong by now
            await forger.layer.send(reply, response_frame)
            response = await asyncio.wait_for(request, 15)
            assert response.status_code == 200
            assert response.text == "served"
    finally:
        await forger.close()
    # And a real Node serves the next request through the same edge.
    gateway.start_node(layer=LAYER)
    assert await hello(gateway) == "hello, world"
    needles = [needle for _, needle in during_pickup]
    text = wait_for_log(
        gateway.logs,
        [
            *needles,
            "dropped a Asgi frame on",
            "dropped an unexpected Accept frame on",
            f"dropped a malformed entry from {key}",
        ],
    )
    log_lines_naming(text, reply, [*needles, "dropped a Asgi frame", "unexpected Accept frame"])
    for needle in needles:  # once while picking up, once while running
        assert sum(needle in line and reply in line for line in text.splitlines()) >= 2, needle


async def test_node_channel(gateway: Gateway) -> None:
    """The test sends a connect in place of the edge and feeds the Node bad input."""
    _, log = gateway.start_node(layer=LAYER)
    forger = Forger(gateway)
    try:
        reply = await forger.layer.new_channel("edge")
        conn_id = "bad-input-1"
        await forger.layer.send(
            "fidelity", encode(Connect(conn_id, SCOPE, reply, time.time() + 10, 2.0))
        )
        # /echo waits for the body, so the Node accepts at once with its channel.
        accept = decode_frame(await asyncio.wait_for(forger.layer.receive(reply), 10))
        assert isinstance(accept, Accept)
        node_channel = accept.channel
        body = encode(Asgi(conn_id, [{"type": "http.request", "body": b"hello"}]))
        payloads = bad_payloads(body)
        await forger.payloads(node_channel, payloads)
        await forger.layer.send(node_channel, encode(Accept(conn_id, reply, 2.0)))  # wrong kind
        # Well-formed frames carrying messages no server would pass to the application.
        await forger.layer.send(
            node_channel,
            encode(
                Asgi(
                    conn_id,
                    [
                        {"type": "http.response.start", "status": 200},
                        {"type": "http.request", "body": "not bytes"},
                    ],
                )
            ),
        )
        key = await forger.headerless_entry(node_channel)
        await forger.layer.send(node_channel, body)
        messages: list[dict[str, Any]] = []
        while not messages or messages[-1].get("more_body", False) or len(messages) < 2:
            frame = decode_frame(await asyncio.wait_for(forger.layer.receive(reply), 10))
            if isinstance(frame, Asgi):
                messages.extend(frame.messages)
        assert messages[0]["status"] == 200
        assert b"".join(m.get("body", b"") for m in messages[1:]) == b"hello"
    finally:
        await forger.close()
    gateway.start_edge(layer=LAYER)
    assert await hello(gateway) == "hello, world"
    needles = [needle for _, needle in payloads] + [
        "dropped a Accept frame on",
        "'http.response.start' is not a message an ASGI server sends to a http app",
        "http.request message field 'body' has the wrong type",
    ]
    text = wait_for_log(log.read_text, [*needles, f"dropped a malformed entry from {key}"])
    log_lines_naming(text, node_channel, needles)


async def test_a_route_key_of_the_wrong_redis_type(gateway: Gateway) -> None:
    """Someone SETs a string where the route channel's list lives: the edge refuses with 503
    and names the key, the Node logs it and keeps serving its other key, both recover once the
    key is gone."""
    gateway.start_edge(routes=[["^/hello", "fidelity"], ["^/echo", "other"]], pickup_timeout=2)
    key = f"{gateway.prefix}:q:fidelity"
    admin = aioredis.Redis.from_url(gateway.redis_url)
    try:
        # Before the Node starts: a pop already blocked on the (empty) list would not notice
        # the string until its block timeout.
        await admin.set(key, "not a list")
        _, log = gateway.start_node(keys=["fidelity", "other"])
        async with httpx.AsyncClient(base_url=gateway.url(), timeout=10) as http:
            started = time.monotonic()
            assert (await http.get("/hello")).status_code == 503
            assert time.monotonic() - started < 1.5  # refused at once, not after the pick-up
            assert (await http.post("/echo", content=b"still")).content == b"still"
            await admin.delete(key)
            status, deadline = 0, time.monotonic() + 10
            while status != 200 and time.monotonic() < deadline:
                status = (await http.get("/hello")).status_code
            assert status == 200
    finally:
        await admin.aclose()
    wait_for_log(
        gateway.logs, ["Redis refused the connect of GET /hello for 'fidelity': WRONGTYPE"]
    )
    wait_for_log(log.read_text, [f"receive from {key} failed: WRONGTYPE"])
