"""The application interface (ASGI 2 or 3) is told apart as uvicorn tells it, in Node and CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import uvicorn

from distributed_asgi.ops.cli.options import load_app
from tests.gateway.apps.interfaces import ASGI3_WRAPPERS, SAMPLES, asgi3_sync_wrapper
from tests.gateway.cli_processes import CliProcesses
from tests.gateway.fixtures import Gateway
from tests.gateway.harness import run_gateway, run_uvicorn

APPS = "tests.gateway.apps.interfaces"


def uvicorn_interface(app: Any) -> str:
    config = uvicorn.Config(app, log_config=None)
    config.load()
    return str(config.interface)


def test_the_samples_are_what_uvicorn_says_they_are() -> None:
    for name, (app, interface) in SAMPLES.items():
        assert uvicorn_interface(app) == interface, name


async def test_node_serves_every_shape_as_uvicorn_does_through_app_and_cls(
    redis_url: str, prefix: str
) -> None:
    for name, (app, _) in SAMPLES.items():
        async with run_uvicorn(app) as port, httpx.AsyncClient(timeout=10) as http:
            direct = await http.get(f"http://127.0.0.1:{port}/")
        assert (direct.status_code, direct.text) == (200, f"{name} {direct.text.split()[-1]}")
        for as_cls in (False, True):
            async with (
                run_gateway(app, redis_url=redis_url, prefix=prefix, as_cls=as_cls) as gw,
                httpx.AsyncClient(timeout=10) as http,
            ):
                behind = await http.get(gw.url("/"))
            assert (behind.status_code, behind.text) == (200, direct.text), (name, as_cls)
            assert gw.node.asgi_version == direct.text.split()[-1]


async def test_bound_methods_and_partials_of_asgi3_functions_are_asgi3() -> None:
    for name, app in ASGI3_WRAPPERS.items():
        async with run_gateway(app) as gw, httpx.AsyncClient(timeout=10) as http:
            response = await http.get(gw.url("/"))
        assert (response.status_code, response.text) == (200, f"{name} 3.0")


async def test_node_interface_overrides_the_detection() -> None:
    # A plain function returning the coroutine of an ASGI 3 app: uvicorn's rule says ASGI 2.
    assert uvicorn_interface(asgi3_sync_wrapper) == "asgi2"
    cases = [
        (asgi3_sync_wrapper, "asgi3", "asgi3_function 3.0"),
        (SAMPLES["Asgi2Class"][0], "asgi2", "Asgi2Class 2.0"),
    ]
    for app, interface, expected in cases:
        async with (
            run_gateway(app, node_options={"interface": interface}) as gw,
            httpx.AsyncClient(timeout=10) as http,
        ):
            assert (await http.get(gw.url("/"))).text == expected


async def _call(app: Any) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "asgi": {"version": "3.0"}}, receive, send)
    return sent[0]["status"], sent[1]["body"]


@pytest.mark.parametrize("name", [*SAMPLES, *ASGI3_WRAPPERS])
def test_load_app_returns_an_asgi3_callable_for_every_shape(name: str) -> None:
    app = load_app(f"{APPS}:{name}")
    assert asyncio.run(_call(app)) == (200, f"{name} 3.0".encode())


def test_load_app_interface_overrides_the_detection() -> None:
    # Forced to ASGI 3, an ASGI 2 function is called with three arguments and fails...
    with pytest.raises(TypeError):
        asyncio.run(_call(load_app(f"{APPS}:asgi2_function", interface="asgi3")))
    # ...and forced to ASGI 2, an ASGI 3 class is instantiated with the scope alone.
    with pytest.raises(TypeError):
        asyncio.run(_call(load_app(f"{APPS}:Asgi3Class", interface="asgi2")))
    assert asyncio.run(_call(load_app(f"{APPS}:Asgi2Class", interface="asgi2")))[0] == 200


def test_worker_command_serves_an_asgi3_class(
    gateway: Gateway, redis_url: str, prefix: str, tmp_path: Any
) -> None:
    gateway.start_edge(routes=[["^/", "iface"]])
    cli = CliProcesses(tmp_path)
    try:
        cli.start(
            "worker",
            [
                *("worker", f"{APPS}:Asgi3Class", "--key", "iface"),
                *("--redis", redis_url, "--prefix", prefix),
            ],
        )
        cli.wait_for("worker", lambda text: "Node listening" in text)
        response = httpx.get(gateway.url("/"), timeout=10)
        assert (response.status_code, response.text) == (200, "Asgi3Class 3.0")
    finally:
        cli.stop()
