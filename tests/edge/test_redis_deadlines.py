"""The pickup timeout bounds the whole pick-up: an edge cut off from Redis answers every request
503 within ``pickup_timeout`` + 1 s, however many are waiting, and serves again once the network
is back. The cut is a partition (bytes silently held, sockets open; tests/gateway/blackhole.py),
not a stopped server, which would fail fast by itself.

Run with ``-s`` to see the measured times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.gateway.blackhole import BlackholeProxy
from tests.gateway.fixtures import Gateway

PICKUP = 2.0
# DESIGN.md's failure table: requests during an outage get 503 within the pickup timeout.
BOUND = PICKUP + 1.0


@pytest.fixture
def proxy(redis_url: str) -> Iterator[BlackholeProxy]:
    port = urlsplit(redis_url).port
    assert port is not None
    with BlackholeProxy(port) as blackhole:
        yield blackhole


def start_edge_behind(gateway: Gateway, proxy: BlackholeProxy, **options: Any) -> None:
    """An edge that reaches Redis through ``proxy``; Nodes started later connect directly."""
    direct = gateway.redis_url
    gateway.redis_url = proxy.url
    try:
        gateway.start_edge(**options)
    finally:
        gateway.redis_url = direct


def timed_get(client: httpx.Client, path: str) -> tuple[int | str, float]:
    started = time.monotonic()
    try:
        status: int | str = client.get(path).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, time.monotonic() - started


def test_edge_partitioned_from_redis_answers_503_within_the_pickup_timeout(
    gateway: Gateway, proxy: BlackholeProxy
) -> None:
    start_edge_behind(gateway, proxy, pickup_timeout=PICKUP)
    gateway.start_node()
    results: list[tuple[int | str, float]] = []
    lock = threading.Lock()

    def client_loop(count: int) -> None:
        with httpx.Client(base_url=gateway.url(), timeout=60) as client:
            for _ in range(count):
                outcome = timed_get(client, "/hello")
                with lock:
                    results.append(outcome)

    with httpx.Client(base_url=gateway.url(), timeout=60) as client:
        assert client.get("/hello").status_code == 200  # the edge's connections are open
        with proxy.partitioned():
            # Requests already waiting when the first ones are stuck, and requests arriving
            # one after another: none may queue behind another one's Redis call.
            threads = [threading.Thread(target=client_loop, args=(2,)) for _ in range(4)]
            for index, thread in enumerate(threads):
                thread.start()
                time.sleep(0.3 * index)
            for thread in threads:
                thread.join()
        healed_at = time.monotonic()
        status = 0
        while status != 200 and time.monotonic() - healed_at < 20:
            status = client.get("/hello").status_code
        recovered = time.monotonic() - healed_at
    times = sorted(seconds for _, seconds in results)
    print(
        f"\nedge partitioned from Redis, pickup_timeout={PICKUP}s: {len(results)} requests, "
        f"503 after {times[0]:.2f}-{times[-1]:.2f}s; served again {recovered:.2f}s after healing"
    )
    assert [status for status, _ in results] == [503] * 8, (results, gateway.logs()[-4000:])
    assert times[-1] <= BOUND, (times, gateway.logs()[-4000:])
    assert status == 200, gateway.logs()[-4000:]


def test_requests_after_a_partition_healed_are_served_at_once(
    gateway: Gateway, proxy: BlackholeProxy
) -> None:
    """A command cut off mid-flight must not leave its reply on a connection that a later
    request reads: after healing, every answer belongs to its own request."""
    start_edge_behind(gateway, proxy, pickup_timeout=PICKUP)
    gateway.start_node()
    with httpx.Client(base_url=gateway.url(), timeout=60) as client:
        assert client.get("/hello").status_code == 200
        with proxy.partitioned():
            status, seconds = timed_get(client, "/hello")
            assert status == 503
            assert seconds <= BOUND
        deadline = time.monotonic() + 20
        while client.get("/hello").status_code != 200:
            assert time.monotonic() < deadline, gateway.logs()[-4000:]
        for index in range(20):
            body = f"request {index}".encode()
            response = client.post("/echo", content=body)
            assert (response.status_code, response.content) == (200, body)
