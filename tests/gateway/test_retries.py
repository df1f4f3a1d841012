"""Retries that are always safe (edge/retry.py): a request whose Node dies before any of its
response reached the client goes to another Node when repeating it is safe, and only then.

Real processes: an edge, two Nodes, the session Redis; the Node serving the request is
SIGKILLed while the application runs (``/first-run-hangs`` counts its runs, one line per run
with the Node's pid, and hangs on the first).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from distributed_asgi.edge.retry import COUNT_TIMEOUT
from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.ops.status import collect
from tests.gateway.fixtures import Gateway

HEARTBEAT = 0.3  # the Nodes' interval: a killed Node is given up after 3 of them


def _runs(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().splitlines()] if path.exists() else []


class FirstRunKiller:
    """SIGKILLs the Node that starts the first run of a marker, once the edge has its accept."""

    def __init__(self, gateway: Gateway, name: str) -> None:
        self.runs = gateway.marker(f"runs-{name}")
        self.killed: int | None = None
        self.killed_at = 0.0
        self._thread = threading.Thread(target=self._kill, daemon=True)
        self._thread.start()

    def _kill(self) -> None:
        deadline = time.monotonic() + 20
        while not _runs(self.runs) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.killed = _runs(self.runs)[0]
        self.killed_at = time.monotonic()
        os.kill(self.killed, signal.SIGKILL)

    def join(self) -> None:
        self._thread.join(timeout=30)


@pytest.fixture
def two_nodes(gateway: Gateway) -> Gateway:
    gateway.start_edge()
    for _ in range(2):
        gateway.start_node(heartbeat_interval=HEARTBEAT)
    return gateway


def test_a_get_whose_node_dies_is_answered_by_another_node(
    two_nodes: Gateway, redis_url: str, prefix: str
) -> None:
    with httpx.Client(base_url=two_nodes.url(), timeout=20) as client:
        unbroken = client.get("/hello").elapsed.total_seconds()
        killer = FirstRunKiller(two_nodes, "get")
        response = client.get("/first-run-hangs", params={"marker": "get"})
    answered = time.monotonic()
    killer.join()
    assert response.status_code == 200, two_nodes.logs()[-3000:]
    runs = _runs(killer.runs)
    assert len(runs) == 2 and runs[0] == killer.killed != runs[1]  # once on each Node
    assert response.json()["pid"] == runs[1]
    # Given up after the killed Node's window (3 x 0.3 s), then a fresh pick-up.
    assert answered - killer.killed_at < 5
    print(
        f"retried GET answered {answered - killer.killed_at:.2f}s after its Node was killed "
        f"(window {3 * HEARTBEAT:.1f}s); an unbroken GET took {unbroken * 1000:.1f} ms"
    )
    assert "retrying GET /first-run-hangs on another Node (retry 1 of 1)" in two_nodes.logs()
    # The edge counts the retry in the background (edge/retry.py), alongside the retried
    # request: on a loaded machine the count may land after the response.
    counter = redis.Redis.from_url(redis_url)
    give_up = time.monotonic() + COUNT_TIMEOUT + 1
    while (counted := counter.get(f"{prefix}:r:fidelity")) is None and time.monotonic() < give_up:
        time.sleep(0.05)
    assert counted == b"1"
    snapshot = asyncio.run(collect(RedisChannelLayer(hosts=[redis_url], prefix=prefix)))
    (route,) = [route for route in snapshot["routes"] if route["key"] == "fidelity"]
    assert route["retried"] == 1  # what `distributed-asgi status` shows


def test_a_post_whose_node_dies_is_502_and_ran_once(two_nodes: Gateway) -> None:
    killer = FirstRunKiller(two_nodes, "post")
    with httpx.Client(base_url=two_nodes.url(), timeout=20) as client:
        response = client.post("/first-run-hangs", params={"marker": "post"}, content=b"order")
    killer.join()
    assert response.status_code == 502
    assert _runs(killer.runs) == [killer.killed]
    assert "retrying" not in two_nodes.logs()


def test_a_get_whose_response_had_started_is_cut_not_answered_twice(two_nodes: Gateway) -> None:
    runs = two_nodes.marker("runs-started")
    with httpx.Client(base_url=two_nodes.url(), timeout=20) as client:
        params = {"marker": "started", "started": "1"}
        with client.stream("GET", "/first-run-hangs", params=params) as response:
            assert response.status_code == 200  # the response has started: now the Node dies
            (running,) = _runs(runs)
            os.kill(running, signal.SIGKILL)
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
    assert _runs(runs) == [running]


def test_the_retry_no_node_takes_is_502_never_503(gateway: Gateway) -> None:
    """The request ran on the lost Node: a 503 would tell the client it never ran."""
    gateway.start_edge(pickup_timeout=0.5)
    gateway.start_node(heartbeat_interval=HEARTBEAT)
    killer = FirstRunKiller(gateway, "alone")
    with httpx.Client(base_url=gateway.url(), timeout=20) as client:
        response = client.get("/first-run-hangs", params={"marker": "alone"})
    killer.join()
    assert response.status_code == 502
    assert _runs(killer.runs) == [killer.killed]


def test_retries_0_answers_502_at_once(gateway: Gateway) -> None:
    gateway.start_edge(retries=0)
    for _ in range(2):
        gateway.start_node(heartbeat_interval=HEARTBEAT)
    killer = FirstRunKiller(gateway, "off")
    with httpx.Client(base_url=gateway.url(), timeout=20) as client:
        response = client.get("/first-run-hangs", params={"marker": "off"})
    killer.join()
    assert response.status_code == 502
    assert _runs(killer.runs) == [killer.killed]


def test_a_method_made_retriable_is_retried(gateway: Gateway) -> None:
    gateway.start_edge(retry_methods=["GET", "PUT"])
    for _ in range(2):
        gateway.start_node(heartbeat_interval=HEARTBEAT)
    killer = FirstRunKiller(gateway, "put")
    # Headers and body in one write, so the body is there for the connect (a body still on
    # its way is never retried; http.client writes them apart, so under load it may not be).
    client = socket.create_connection(("127.0.0.1", gateway.port), timeout=20)
    client.sendall(
        b"PUT /first-run-hangs?marker=put HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-length: 9\r\n\r\nsame body"
    )
    response = http.client.HTTPResponse(client)
    response.begin()
    killer.join()
    assert response.status == 200
    assert json.loads(response.read())["body"] == "same body"  # the whole body went again
    client.close()
    assert len(_runs(killer.runs)) == 2
