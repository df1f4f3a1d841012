"""WebSocket through a real gateway: handshake, frames both ways, close codes, denial."""

from __future__ import annotations

import contextlib
import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .conftest import Gateway


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
