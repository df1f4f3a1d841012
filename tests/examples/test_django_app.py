"""examples/django_app (get_asgi_application) served through the gateway."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from tests.examples.conftest import Start

APP = "examples.django_app.app:application"


async def test_django_views(gateway: Start) -> None:
    with gateway(APP) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=20) as client:
            index = await client.get("/")
            assert index.status_code == 200
            assert index.text == f"Hello from Django, served by worker {served.worker_pid}\n"

            hello = await client.get("/hello/caf%C3%A9/", params={"q": "1 2", "x": "ü"})
            assert hello.status_code == 200
            assert hello.json() == {
                "message": "Hello, café!",
                "path": "/hello/café/",
                "query": {"q": "1 2", "x": "ü"},
                "worker_pid": served.worker_pid,
            }

            # CommonMiddleware's APPEND_SLASH redirect comes from Django, through the gateway.
            redirect = await client.get("/hello/bob")
            assert redirect.status_code == 301
            assert redirect.headers["location"] == "/hello/bob/"

            body = b"field=value&other=\xe2\x9c\x93"
            echo = await client.post("/echo/", content=body, headers={"content-type": "text/plain"})
            assert echo.status_code == 200
            assert echo.content == body

            assert (await client.get("/echo/")).status_code == 405
            assert (await client.get("/missing/")).status_code == 404


async def test_channels_chat_reaches_every_member_through_the_layer(gateway: Start) -> None:
    with gateway(APP, workers=2) as served:
        room = served.url.replace("http://", "ws://") + "/ws/chat/lobby/"
        async with (
            websockets.connect(room, open_timeout=20) as alice,
            websockets.connect(room, open_timeout=20) as bob,
        ):
            for member in (alice, bob):
                joined = json.loads(await asyncio.wait_for(member.recv(), 20))
                assert joined["joined"] == "chat-lobby"
                assert joined["worker_pid"] in served.worker_pids
            await alice.send(json.dumps({"text": "hello, room"}))
            for member in (alice, bob):
                message = json.loads(await asyncio.wait_for(member.recv(), 20))
                assert message["text"] == "hello, room"
