"""HTTP through a real gateway: an application cannot tell it is not behind uvicorn.

Each test serves its own inline app with ``run_gateway`` (uvicorn and the Node in the test's
event loop, over Redis where the path through it matters, in memory otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.edge.apps import endless_app
from tests.gateway.harness import Receive, Scope, Send, run_gateway


async def respond(send: Send, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> list[bytes]:
    chunks = []
    more_body = True
    while more_body:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append(message["body"])
        more_body = message.get("more_body", False)
    return chunks


def client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=30)


async def test_hello() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"hello, world", [(b"content-length", b"12")])

    async with run_gateway(app) as gw, client(gw.base_url) as http:
        response = await http.get("/hello")
        head = await http.head("/hello")
    assert response.status_code == 200
    assert response.text == "hello, world"
    assert response.headers["content-length"] == "12"
    # HEAD: the same headers and no body.
    assert head.status_code == 200
    assert head.headers["content-length"] == "12"
    assert head.content == b""


async def _upload_app(scope: Scope, receive: Receive, send: Send) -> None:
    chunks = await read_body(receive)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    body = {"sha256": digest, "length": sum(map(len, chunks)), "chunks": len(chunks)}
    await respond(send, 200, json.dumps(body).encode())


async def test_request_body_streamed_in_chunks(redis_url: str, prefix: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        for index in range(5):
            yield f"part-{index};".encode()
            await asyncio.sleep(0.05)

    async with (
        run_gateway(_upload_app, redis_url=redis_url, prefix=prefix) as gw,
        client(gw.base_url) as http,
    ):
        data = (await http.post("/upload", content=body())).json()
    expected = b"".join(f"part-{i};".encode() for i in range(5))
    assert data["sha256"] == hashlib.sha256(expected).hexdigest()
    assert data["length"] == len(expected)
    assert data["chunks"] > 1  # the application saw more_body=True chunks, not one blob


async def test_large_upload(redis_url: str, prefix: str) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    async with (
        run_gateway(_upload_app, redis_url=redis_url, prefix=prefix) as gw,
        client(gw.base_url) as http,
    ):
        response = await http.post("/upload", content=payload)
    assert response.status_code == 200
    assert response.json()["sha256"] == hashlib.sha256(payload).hexdigest()
    assert response.json()["length"] == len(payload)


async def test_echo_round_trip_of_a_large_body(redis_url: str, prefix: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"".join(await read_body(receive)))

    payload = os.urandom(3 * 1024 * 1024 + 7)
    async with (
        run_gateway(app, redis_url=redis_url, prefix=prefix) as gw,
        client(gw.base_url) as http,
    ):
        response = await http.post("/echo", content=payload)
    assert response.content == payload


async def test_streamed_response_arrives_in_order_and_incrementally() -> None:
    released = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(4):
            body = f"chunk-{index}\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await released.wait()
        await send({"type": "http.response.body", "body": b"end\n"})

    received = b""
    async with (
        run_gateway(app) as gw,
        client(gw.base_url) as http,
        http.stream("GET", "/stream") as response,
    ):
        chunks = response.aiter_raw()
        # The first chunks reach the client while the application has not finished.
        while received != b"chunk-0\nchunk-1\nchunk-2\nchunk-3\n":
            received += await anext(chunks)
        released.set()
        async for chunk in chunks:
            received += chunk
    assert received == b"chunk-0\nchunk-1\nchunk-2\nchunk-3\nend\n"


async def test_exact_status_header_order_and_repeated_set_cookie() -> None:
    headers = [
        (b"x-first", b"1"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"x-middle", b"2"),
        (b"set-cookie", b"b=2; HttpOnly"),
        (b"set-cookie", b"c=3"),
        (b"content-type", b"text/plain"),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 299, b"cookies", headers)

    async with run_gateway(app) as gw, client(gw.base_url) as http:
        response = await http.get("/cookies")
    assert response.status_code == 299
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly", "c=3"]
    names = [name for name, _ in response.headers.raw]
    assert [n for n in names if n in {name for name, _ in headers}] == [n for n, _ in headers]


async def test_204_and_304() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/empty":
            await respond(send, 204, b"")
        else:
            await respond(send, 304, b"", [(b"etag", b'"x"')])

    async with run_gateway(app) as gw, client(gw.base_url) as http:
        empty = await http.get("/empty")
        not_modified = await http.get("/not-modified")
    assert empty.status_code == 204
    assert empty.content == b""
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == '"x"'


def _scope_view(scope: Scope) -> dict[str, Any]:
    def text(value: object) -> object:
        return value.decode("latin-1") if isinstance(value, bytes) else value

    return {
        "type": scope["type"],
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": text(scope["raw_path"]),
        "raw_path_is_bytes": isinstance(scope["raw_path"], bytes),
        "query_string": text(scope["query_string"]),
        "query_string_is_bytes": isinstance(scope["query_string"], bytes),
        "headers": [[text(k), text(v)] for k, v in scope["headers"]],
        "headers_are_byte_tuples": all(
            isinstance(h, tuple) and all(isinstance(x, bytes) for x in h) for h in scope["headers"]
        ),
        "root_path": scope["root_path"],
        "client": list(scope["client"]),
        "client_is_tuple": isinstance(scope["client"], tuple),
        "server": list(scope["server"]),
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "asgi": scope["asgi"],
        "extensions": sorted(scope.get("extensions") or {}),
        "state": scope.get("state"),
    }


async def _scope_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        scope["state"]["started_by"] = "lifespan"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})
        return
    await respond(send, 200, json.dumps(_scope_view(scope)).encode())


async def test_scope_matches_uvicorn(redis_url: str, prefix: str) -> None:
    async with (
        run_gateway(
            _scope_app, redis_url=redis_url, prefix=prefix, node_options={"lifespan": "on"}
        ) as gw,
        client(gw.base_url) as http,
    ):
        response = await http.get(
            "/scope?name=%C3%A9t%C3%A9&a=1&a=2", headers=[("x-rep", "1"), ("x-rep", "2")]
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
    assert data["server"] == ["127.0.0.1", gw.port]
    assert data["headers_are_byte_tuples"] is True
    assert [v for k, v in data["headers"] if k == "x-rep"] == ["1", "2"]
    assert data["asgi"]["version"] == "3.0"
    # Nothing the whole path cannot honour is advertised.
    assert data["extensions"] == []
    # Lifespan state from the Node's own startup, not the edge's.
    assert data["state"]["started_by"] == "lifespan"


async def test_non_ascii_path_reaches_the_app_decoded() -> None:
    async with run_gateway(_scope_app) as gw, client(gw.base_url) as http:
        data = (await http.get("/caf%C3%A9/%E2%9C%93?q=%C3%A9t%C3%A9&q=2")).json()
    assert data["path"] == "/caf\u00e9/\u2713"
    assert data["raw_path"] == "/caf%C3%A9/%E2%9C%93"
    assert data["query_string"] == "q=%C3%A9t%C3%A9&q=2"


async def test_root_path_is_carried_over() -> None:
    async with (
        run_gateway(_scope_app, uvicorn_options={"root_path": "/mount"}) as gw,
        client(gw.base_url) as http,
    ):
        data = (await http.get("/x/y")).json()
    assert data["root_path"] == "/mount"
    assert data["path"] == "/mount/x/y"


async def test_client_disconnect_reaches_the_app(redis_url: str, prefix: str) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with (
        run_gateway(endless_app(heard), redis_url=redis_url, prefix=prefix) as gw,
        client(gw.base_url) as http,
    ):
        async with http.stream("GET", "/endless") as response:
            async for _ in response.aiter_raw():
                break
        assert await asyncio.wait_for(heard.get(), 10) == "http.disconnect"
