"""WebSocket through a real gateway: handshake, frames both ways, close codes, denial.

Each test serves its own inline app with ``run_gateway`` in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway.apps.fidelity import ws_echo
from tests.gateway.harness import Receive, Scope, Send, run_gateway, run_uvicorn


async def _echo(receive: Receive, send: Send, heard: asyncio.Queue[Any] | None = None) -> None:
    """The fidelity app's echo; the client's disconnect code goes to ``heard``."""
    code = await ws_echo(receive, send)
    if code is not None and heard is not None:
        await heard.put(code)


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await _echo(receive, send)


async def test_accept_with_subprotocol_and_headers(redis_url: str, prefix: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            scope["state"]["started_by"] = "lifespan"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert (await receive())["type"] == "websocket.connect"
        accept = {"subprotocol": scope["subprotocols"][-1], "headers": [(b"x-accepted", b"yes")]}
        await send({"type": "websocket.accept", **accept})
        await receive()
        seen = {"subprotocols": scope["subprotocols"], "state": scope.get("state")}
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await receive()

    async with (
        run_gateway(app, redis_url=redis_url, prefix=prefix, node_options={"lifespan": "on"}) as gw,
        connect(gw.ws_url(), subprotocols=["one", "two"]) as ws,  # type: ignore[list-item]
    ):
        assert ws.subprotocol == "two"
        assert ws.response is not None
        assert ws.response.headers["x-accepted"] == "yes"
        await ws.send("scope")
        data = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert data["subprotocols"] == ["one", "two"]
    assert data["state"]["started_by"] == "lifespan"


async def test_text_and_binary_frames_both_ways(redis_url: str, prefix: str) -> None:
    async with (
        run_gateway(echo_app, redis_url=redis_url, prefix=prefix) as gw,
        connect(gw.ws_url()) as ws,
    ):
        for index in range(20):
            await ws.send(f"text-{index}")
            await ws.send(bytes([index, 0, 255]))
        for index in range(20):
            assert await asyncio.wait_for(ws.recv(), 10) == f"echo:text-{index}"
            assert await asyncio.wait_for(ws.recv(), 10) == b"echo:" + bytes([index, 0, 255])
        await ws.send("\u00e9t\u00e9 \u2713")
        assert await asyncio.wait_for(ws.recv(), 10) == "echo:\u00e9t\u00e9 \u2713"


async def test_server_close_code_reaches_the_client() -> None:
    async with run_gateway(echo_app) as gw, connect(gw.ws_url()) as ws:
        await ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4001
    assert info.value.rcvd.reason == "bye"


async def test_client_close_code_reaches_the_app(redis_url: str, prefix: str) -> None:
    heard: asyncio.Queue[Any] = asyncio.Queue()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await _echo(receive, send, heard)

    async with run_gateway(app, redis_url=redis_url, prefix=prefix) as gw:
        async with connect(gw.ws_url()) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 10) == "echo:hi"
            await ws.close(code=4002, reason="client says bye")
        assert await asyncio.wait_for(heard.get(), 10) == 4002


async def test_denial_before_accept_is_403() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.close"})

    async with run_gateway(app) as gw:
        with pytest.raises(InvalidStatus) as info:
            await connect(gw.ws_url())
    assert info.value.response.status_code == 403


async def test_denial_response_extension() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "websocket.http.response.start", "status": 418, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"no websockets here"})

    async with run_gateway(app) as gw:
        with pytest.raises(InvalidStatus) as info:
            await connect(gw.ws_url())
    assert info.value.response.status_code == 418
    assert info.value.response.body == b"no websockets here"


async def test_many_connections_each_reach_their_own_instance(redis_url: str, prefix: str) -> None:
    async with (
        run_gateway(echo_app, redis_url=redis_url, prefix=prefix) as gw,
        contextlib.AsyncExitStack() as stack,
    ):
        sockets = [await stack.enter_async_context(connect(gw.ws_url())) for _ in range(10)]
        for index, ws in enumerate(sockets):
            await ws.send(f"from-{index}")
        for index, ws in enumerate(sockets):
            assert await asyncio.wait_for(ws.recv(), 10) == f"echo:from-{index}"


async def test_large_binary_message_both_ways(redis_url: str, prefix: str) -> None:
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB
    async with (
        run_gateway(echo_app, redis_url=redis_url, prefix=prefix) as gw,
        connect(gw.ws_url(), max_size=None) as ws,
    ):
        await ws.send(payload)
        assert await asyncio.wait_for(ws.recv(), 20) == b"echo:" + payload


# -- what the application's receive() gives after it refused or closed, against uvicorn --------


def _refusing_app(how: str) -> tuple[Any, asyncio.Queue[dict[str, Any]]]:
    """An app that answers the handshake as ``how`` says, then reports its next receive()."""
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        if how == "close-before-accept":
            await send({"type": "websocket.close"})
        elif how == "denial-response":
            await send({"type": "websocket.http.response.start", "status": 418, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"teapot"})
        else:
            await send({"type": "websocket.accept"})
            if how == "close-4001":
                await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
            else:
                await send({"type": "websocket.close"})
        await seen.put(await asyncio.wait_for(receive(), 10))

    return app, seen


async def _client_view(url: str) -> tuple[int, bytes | None]:
    """What the client got: (HTTP status of a refused handshake, its body) or (close code, None)."""
    try:
        async with connect(url, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
    except InvalidStatus as refused:
        return refused.response.status_code, bytes(refused.response.body)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, None


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("close-before-accept", {"type": "websocket.disconnect", "code": 1006}),
        ("denial-response", {"type": "websocket.disconnect", "code": 1006}),
        ("close-after-accept", {"type": "websocket.disconnect", "code": 1000, "reason": ""}),
        ("close-4001", {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}),
    ],
)
async def test_receive_after_refusing_or_closing_gives_what_uvicorn_gives(
    how: str, expected: dict[str, Any]
) -> None:
    app, seen = _refusing_app(how)
    direct: dict[str, Any] = {}
    # uvicorn's default WebSocket implementation (websockets-sansio) and wsproto agree.
    for ws in ("auto", "wsproto"):
        async with run_uvicorn(app, ws=ws) as port:
            view = await _client_view(f"ws://127.0.0.1:{port}/ws")
            direct[ws] = (view, await asyncio.wait_for(seen.get(), 10))
    assert direct["auto"] == direct["wsproto"]
    assert direct["auto"][1] == expected

    async with run_gateway(app) as gw:
        behind = (await _client_view(gw.ws_url()), await asyncio.wait_for(seen.get(), 10))
    assert behind == direct["auto"]
