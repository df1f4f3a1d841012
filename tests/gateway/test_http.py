"""HTTP through a real gateway: an application cannot tell it is not behind uvicorn."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Gateway


@pytest.fixture
def client(shared_gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_gateway.url(), timeout=30) as http:
        yield http


def test_hello(client: httpx.Client) -> None:
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "hello, world"
    assert response.headers["content-length"] == "12"


def test_request_body_streamed_in_chunks(client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        for index in range(5):
            yield f"part-{index};".encode()
            time.sleep(0.05)

    response = client.post("/upload", content=body())
    data = response.json()
    expected = b"".join(f"part-{i};".encode() for i in range(5))
    assert data["sha256"] == hashlib.sha256(expected).hexdigest()
    assert data["length"] == len(expected)
    assert data["chunks"] > 1  # the application saw more_body=True chunks, not one blob


def test_large_upload(client: httpx.Client) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    response = client.post("/upload", content=payload)
    assert response.status_code == 200
    assert response.json()["sha256"] == hashlib.sha256(payload).hexdigest()
    assert response.json()["length"] == len(payload)


def test_echo_round_trip_of_a_large_body(client: httpx.Client) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 7)
    response = client.post("/echo", content=payload)
    assert response.content == payload


def test_streamed_response_arrives_in_order_and_incrementally(client: httpx.Client) -> None:
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with client.stream("GET", "/stream", params={"n": 4, "delay": 0.3}) as response:
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    body = b"".join(chunk for _, chunk in arrivals)
    assert body == b"chunk-0\nchunk-1\nchunk-2\nchunk-3\nend\n"
    # The first chunk reached the client long before the application finished.
    assert arrivals[-1][0] - arrivals[0][0] > 0.6


def test_exact_status_header_order_and_repeated_set_cookie(client: httpx.Client) -> None:
    response = client.get("/cookies")
    assert response.status_code == 299
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly", "c=3"]
    names = [name for name, _ in response.headers.raw]
    ours = [n for n in names if n in (b"x-first", b"set-cookie", b"x-middle", b"content-type")]
    assert ours == [
        b"x-first",
        b"set-cookie",
        b"x-middle",
        b"set-cookie",
        b"set-cookie",
        b"content-type",
    ]


def test_head_has_headers_and_no_body(client: httpx.Client) -> None:
    response = client.head("/hello")
    assert response.status_code == 200
    assert response.headers["content-length"] == "12"
    assert response.content == b""


def test_204_and_304(client: httpx.Client) -> None:
    response = client.get("/empty")
    assert response.status_code == 204
    assert response.content == b""
    response = client.get("/not-modified")
    assert response.status_code == 304
    assert response.headers["etag"] == '"x"'


def test_scope_matches_uvicorn(shared_gateway: Gateway) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.get(
            shared_gateway.url("/scope") + "?name=%C3%A9t%C3%A9&a=1&a=2",
            headers=[("x-rep", "1"), ("x-rep", "2")],
        )
    data = response.json()
    assert data["type"] == "http"
    assert data["method"] == "GET"
    assert data["path"] == "/scope"
    assert data["raw_path"] == "/scope"
    assert data["raw_path_is_bytes"] is True
    assert data["query_string"] == "name=%C3%A9t%C3%A9&a=1&a=2"
    assert data["query_string_is_bytes"] is True
    assert data["scheme"] == "http"
    assert data["http_version"] == "1.1"
    assert data["root_path"] == ""
    assert data["client"][0] == "127.0.0.1"
    assert isinstance(data["client"][1], int)
    assert data["client_is_tuple"] is True
    assert data["server"] == ["127.0.0.1", shared_gateway.port]
    assert data["headers_are_byte_tuples"] is True
    assert [v for k, v in data["headers"] if k == "x-rep"] == ["1", "2"]
    assert data["asgi"]["version"] == "3.0"
    # Nothing the whole path cannot honour is advertised.
    assert data["extensions"] == []
    # Lifespan state from the Node's own startup, not the edge's.
    assert data["state"]["started_by"] == "lifespan"


def test_non_ascii_path_reaches_the_app_decoded(gateway: Gateway) -> None:
    gateway.start_edge(routes=[["^/", "fidelity"]])
    gateway.start_node(app="tests.gateway.apps.scope_echo:app")
    with httpx.Client(timeout=10) as http:
        response = http.get(gateway.url("/caf%C3%A9/%E2%9C%93?q=%C3%A9t%C3%A9&q=2"))
    data = response.json()
    assert data["path"] == "/caf\u00e9/\u2713"
    assert data["raw_path"] == "/caf%C3%A9/%E2%9C%93"
    assert data["query_string"] == "q=%C3%A9t%C3%A9&q=2"


def test_root_path_is_carried_over(gateway: Gateway) -> None:
    gateway.start_edge(routes=[["^/", "fidelity"]], uvicorn={"root_path": "/mount"})
    gateway.start_node(app="tests.gateway.apps.scope_echo:app")
    with httpx.Client(timeout=10) as http:
        data = http.get(gateway.url("/x/y")).json()
    assert data["root_path"] == "/mount"
    assert data["path"] == "/mount/x/y"


def test_client_disconnect_reaches_the_app(shared_gateway: Gateway) -> None:
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", shared_gateway.url("/endless"), params={"marker": "gone-1"}) as response,
    ):
        for _ in response.iter_raw():
            break
    assert shared_gateway.wait_marker("gone-1") == "http.disconnect"
