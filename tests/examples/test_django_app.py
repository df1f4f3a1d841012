"""examples/django_app (get_asgi_application) served through the gateway."""

from __future__ import annotations

import httpx

from .conftest import Start

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
