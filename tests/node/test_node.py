"""The seed API end to end, and the Node's capacity, lifespan and graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from distributed_asgi import Node
from distributed_asgi.ops.redis_process import free_port
from tests.gateway.fixtures import ROOT, Gateway
from tests.gateway.harness import Receive, Scope, Send, run_gateway
from tests.support import wait_until_listening


def test_seed_readme_example_end_to_end(redis_url: str, tmp_path: Path) -> None:
    parts = urlsplit(redis_url)
    env = {
        **os.environ,
        "SEED_REDIS_HOST": str(parts.hostname),
        "SEED_REDIS_PORT": str(parts.port),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    port = free_port()
    log = open(tmp_path / "seed.log", "wb")  # noqa: SIM115
    edge = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn"),
            *("tests.gateway.apps.seed_distributor:app", "--port", str(port)),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [sys.executable, "tests/gateway/apps/seed_worker.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_listening(port, processes=[edge])
        response = httpx.get(f"http://127.0.0.1:{port}/api/testing", timeout=10)
        assert response.status_code == 200
        assert response.text == "Hello World!"
    finally:
        for process in (edge, worker):
            process.send_signal(signal.SIGINT)
        for process in (edge, worker):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
    assert worker.returncode == 0, (tmp_path / "seed.log").read_text()


def test_max_applications_leaves_work_in_redis_for_another_node(gateway: Gateway) -> None:
    gateway.start_edge()
    gateway.start_node(max_applications=1)
    results: dict[str, int] = {}

    def call(name: str) -> None:
        with httpx.Client(timeout=20) as http:
            response = http.get(gateway.url("/pid"), params={"sleep": 2, "marker": name})
            results[name] = response.json()["pid"]

    first = threading.Thread(target=call, args=("first",))
    first.start()
    gateway.wait_marker("first")
    second = threading.Thread(target=call, args=("second",))
    second.start()
    time.sleep(0.5)
    # The busy Node took nothing more: the second request is still waiting in Redis...
    assert not gateway.marker("second").exists()
    # ...where a second Node picks it up.
    gateway.start_node(max_applications=1)
    first.join()
    second.join()
    assert results["first"] != results["second"]


def test_sigterm_drains_in_flight_request_then_exits_0(gateway: Gateway) -> None:
    gateway.start_edge()
    node, log = gateway.start_node()
    result: dict[str, object] = {}

    def call() -> None:
        with httpx.Client(timeout=20) as http:
            response = http.get(gateway.url("/pid"), params={"sleep": 1.5, "marker": "inflight"})
            result["status"] = response.status_code
            result["pid"] = response.json()["pid"]

    thread = threading.Thread(target=call)
    thread.start()
    gateway.wait_marker("inflight")
    node.send_signal(signal.SIGTERM)
    thread.join()
    assert node.wait(10) == 0
    assert result == {"status": 200, "pid": node.pid}
    # Lifespan shutdown ran after the drain.
    assert gateway.marker(f"shutdown-{node.pid}").read_text() == "done"
    text = log.read_text()
    assert text.index("Waiting for 1 connection(s) to finish") < text.index("Node stopped")


def test_a_stopping_node_takes_no_new_connections(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=1.0)
    node, _ = gateway.start_node()
    thread = threading.Thread(
        target=lambda: httpx.get(
            gateway.url("/pid"), params={"sleep": 2, "marker": "busy"}, timeout=20
        )
    )
    thread.start()
    gateway.wait_marker("busy")
    node.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    response = httpx.get(gateway.url("/hello"), timeout=10)
    assert response.status_code == 503
    thread.join()
    assert node.wait(10) == 0


def test_node_arguments_are_checked_at_construction() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    with pytest.raises(ValueError, match="exactly one of cls"):
        Node(key="k")
    with pytest.raises(ValueError, match="exactly one of cls"):
        Node(cls=app, app=app, key="k")
    with pytest.raises(ValueError, match="at least one channel"):
        Node(app=app)
    with pytest.raises(ValueError, match="invalid key 'a b'"):
        Node(app=app, key="a b")
    with pytest.raises(ValueError, match="max_applications"):
        Node(app=app, key="k", max_applications=0)
    with pytest.raises(ValueError, match="lifespan"):
        Node(app=app, key="k", lifespan="maybe")


async def test_embedded_node_serves_and_stops(redis_url: str, prefix: str) -> None:
    """``await node.arun()`` in a running loop, with a Distributor in the same process."""
    import asyncio

    from distributed_asgi import create_path_distributor

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"embedded"})  # type: ignore[operator]

    node = Node(app=app, key="embedded", url=redis_url, layer_options={"prefix": prefix})
    distributor = create_path_distributor(
        url=redis_url, routes={"/": "embedded"}, layer_options={"prefix": prefix}
    )
    running = asyncio.ensure_future(node.arun())
    try:
        # httpx types the scope as a MutableMapping, the package as a dict.
        transport = httpx.ASGITransport(app=distributor)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/")
        assert response.text == "embedded"
    finally:
        node.stop()
        await asyncio.wait_for(running, 10)
        await distributor.aclose()


def test_drain_timeout_cancels_what_is_left_and_a_second_signal_exits_at_once(
    gateway: Gateway,
) -> None:
    gateway.start_edge()
    patient, _ = gateway.start_node(drain_timeout=1.0)
    result: dict[str, int] = {}

    def call(name: str) -> None:
        response = httpx.get(gateway.url("/pid"), params={"sleep": 30, "marker": name}, timeout=20)
        result[name] = response.status_code

    first = threading.Thread(target=call, args=("patient",))
    first.start()
    gateway.wait_marker("patient")
    started = time.monotonic()
    patient.send_signal(signal.SIGTERM)
    assert patient.wait(10) == 0
    assert 0.9 < time.monotonic() - started < 5
    first.join()
    assert result["patient"] == 500  # cancelled by the drain timeout before responding

    impatient, _ = gateway.start_node(drain_timeout=30.0)
    second = threading.Thread(target=call, args=("impatient",))
    second.start()
    gateway.wait_marker("impatient")
    started = time.monotonic()
    impatient.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    impatient.send_signal(signal.SIGTERM)
    impatient.wait(10)
    assert time.monotonic() - started < 5
    second.join()


async def test_one_node_listens_on_several_keys() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    routes = [(r"^/one(/.*)", "key-one"), (r"^/two(/.*)", "key-two")]
    async with (
        run_gateway(app, routes=routes, keys=["key-one", "key-two"]) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http,
    ):
        assert (await http.get("/one/x")).text == "/one/x"
        assert (await http.get("/two/y")).text == "/two/y"
        assert (await http.get("/three")).status_code == 404
