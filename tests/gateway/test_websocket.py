"""WebSocket through a real gateway: handshake, frames both ways, close codes, denial."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .conftest import Gateway
from .inline import inline_node, uvicorn_server


def test_accept_with_subprotocol_and_headers(shared_gateway: Gateway) -> None:
    with connect(shared_gateway.url("/ws", "ws"), subprotocols=["one", "two"]) as ws:
        assert ws.subprotocol == "two"
        assert ws.response is not None
        assert ws.response.headers["x-accepted"] == "yes"
        ws.send("scope")
        data = json.loads(ws.recv(timeout=10))
        assert data["subprotocols"] == ["one", "two"]
        assert data["state"]["started_by"] == "lifespan"


def test_text_and_binary_frames_both_ways(shared_gateway: Gateway) -> None:
    with connect(shared_gateway.url("/ws", "ws")) as ws:
        for index in range(20):
            ws.send(f"text-{index}")
            ws.send(bytes([index, 0, 255]))
        for index in range(20):
            assert ws.recv(timeout=10) == f"echo:text-{index}"
            assert ws.recv(timeout=10) == b"echo:" + bytes([index, 0, 255])
        ws.send("\u00e9t\u00e9 \u2713")
        assert ws.recv(timeout=10) == "echo:\u00e9t\u00e9 \u2713"


def test_server_close_code_reaches_the_client(shared_gateway: Gateway) -> None:
    with connect(shared_gateway.url("/ws", "ws")) as ws:
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4001
    assert info.value.rcvd.reason == "bye"


def test_client_close_code_reaches_the_app(shared_gateway: Gateway) -> None:
    with connect(shared_gateway.url("/ws?marker=ws-close-1", "ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
        ws.close(code=4002, reason="client says bye")
    assert shared_gateway.wait_marker("ws-close-1") == "4002"


def test_denial_before_accept_is_403(shared_gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(shared_gateway.url("/ws-deny", "ws"))
    assert info.value.response.status_code == 403


def test_denial_response_extension(shared_gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(shared_gateway.url("/ws-deny-response", "ws"))
    assert info.value.response.status_code == 418
    assert info.value.response.body == b"no websockets here"


def test_many_connections_each_reach_their_own_instance(shared_gateway: Gateway) -> None:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(shared_gateway.url("/ws", "ws"))) for _ in range(10)]
        for index, ws in enumerate(sockets):
            ws.send(f"from-{index}")
        for index, ws in enumerate(sockets):
            assert ws.recv(timeout=10) == f"echo:from-{index}"


def test_large_binary_message_both_ways(shared_gateway: Gateway) -> None:
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB
    with connect(shared_gateway.url("/ws", "ws"), max_size=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=20) == b"echo:" + payload


# -- what the application's receive() gives after it refused or closed, against uvicorn --------


def _refusing_app(how: str) -> tuple[Any, queue.Queue[dict[str, Any]]]:
    """An app that answers the handshake as ``how`` says, then reports its next receive()."""
    seen: queue.Queue[dict[str, Any]] = queue.Queue()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        seen.put(await asyncio.wait_for(receive(), 10))

    return app, seen


def _client_view(url: str) -> tuple[int, bytes | None]:
    """What the client got: (HTTP status of a refused handshake, its body) or (close code, None)."""
    try:
        with connect(url, open_timeout=10) as ws, pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.body
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
def test_receive_after_refusing_or_closing_gives_what_uvicorn_gives(
    gateway: Gateway, redis_url: str, prefix: str, how: str, expected: dict[str, Any]
) -> None:
    app, seen = _refusing_app(how)
    direct: dict[str, Any] = {}
    # uvicorn's default WebSocket implementation (websockets-sansio) and wsproto agree.
    for ws in ("auto", "wsproto"):
        with uvicorn_server(app, ws=ws) as port:
            direct[ws] = (_client_view(f"ws://127.0.0.1:{port}/ws"), seen.get(timeout=10))
    assert direct["auto"] == direct["wsproto"]
    assert direct["auto"][1] == expected

    gateway.start_edge()
    with inline_node(app, redis_url, prefix, ["fidelity"]):
        behind = (_client_view(gateway.url("/ws", "ws")), seen.get(timeout=10))
    assert behind == direct["auto"]
