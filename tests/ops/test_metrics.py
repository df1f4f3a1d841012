"""Prometheus metrics after real requests: counted in-process through ``run_gateway``, and
scraped from a real edge and worker process (``--metrics-port``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from distributed_asgi.ops.metrics import edge_metrics, node_metrics
from distributed_asgi.ops.redis_process import free_port
from tests.gateway.cli_processes import CliProcesses
from tests.gateway.harness import Receive, Scope, Send, run_gateway


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[CliProcesses]:
    running = CliProcesses(tmp_path)
    yield running
    running.stop()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_edge_and_node_count_requests_by_key_status_and_outcome(prefix: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/error":
            raise ValueError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    # The metrics live in this process's default registry: keys of this test's own.
    key, nobody = f"{prefix}-app", f"{prefix}-nobody"
    async with (
        run_gateway(
            app,
            routes=[("^/nobody", nobody), ("^/(hello|error)", key)],
            keys=[key],
            node_options={"metrics": node_metrics()},
            metrics=edge_metrics(),
            pickup_timeout=0.5,
        ) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client,
    ):
        assert [(await client.get("/hello")).status_code for _ in range(3)] == [200, 200, 200]
        assert (await client.get("/error")).status_code == 500
        assert (await client.get("/elsewhere")).status_code == 404
        assert (await client.get("/nobody")).status_code == 503

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(f"distributed_asgi_{name}", labels) or 0.0

    assert sample("edge_requests_total", key=key, status="200", outcome="served") == 3
    assert sample("edge_requests_total", key=key, status="500", outcome="served") == 1
    assert sample("edge_requests_total", key=nobody, status="503", outcome="no_worker") == 1
    assert sample("edge_pickup_wait_seconds_count", key=key) == 4
    assert sample("edge_pickup_wait_seconds_count", key=nobody) == 0
    assert sample("edge_request_seconds_count", key=nobody) == 1
    assert sample("edge_request_seconds_sum", key=nobody) >= 0.5
    assert sample("edge_in_flight") == 0
    assert sample("node_requests_total", key=key, outcome="served") == 3
    assert sample("node_requests_total", key=key, outcome="error") == 1
    assert sample("node_request_seconds_count", key=key) == 4
    assert sample("node_in_flight") == 0


def test_metrics_ports_of_the_edge_and_worker_serve_their_metrics(
    processes: CliProcesses, redis_url: str, prefix: str
) -> None:
    port, edge_metrics_port, node_metrics_port = free_port(), free_port(), free_port()
    layer = ["--redis", redis_url, "--prefix", prefix]
    processes.start(
        "worker",
        [
            *("worker", "tests.gateway.apps.fidelity:app", "--key", "fidelity", *layer),
            *("--metrics-port", str(node_metrics_port)),
        ],
    )
    processes.wait_for("worker", lambda text: "Node listening" in text)
    processes.start(
        "edge",
        [
            *("edge", "--route", "^/nobody=nobody", "--route", "^/hello=fidelity"),
            *("--port", str(port), *layer, "--metrics-port", str(edge_metrics_port)),
        ],
    )
    processes.wait_for_port("edge", port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        assert client.get("/hello").status_code == 200
        assert client.get("/elsewhere").status_code == 404

    edge = scrape(edge_metrics_port)
    requests = "distributed_asgi_edge_requests_total"
    assert value(edge, requests, key="fidelity", status="200", outcome="served") == 1
    assert value(edge, requests, key="", status="404", outcome="no_route") == 1
    node = scrape(node_metrics_port)
    assert (
        value(node, "distributed_asgi_node_requests_total", key="fidelity", outcome="served") == 1
    )
    # The process collector comes with the default registry.
    assert value(node, "process_resident_memory_bytes") > 0


def test_a_taken_metrics_port_fails_the_start_up(processes: CliProcesses, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        process = processes.start(
            "edge",
            [
                *("edge", "--route", "/=x", "--redis", redis_url),
                *("--port", str(free_port()), "--metrics-port", str(busy)),
            ],
        )
        assert process.wait(20) == 1
    assert f"Error: cannot serve metrics on 127.0.0.1:{busy}" in processes.text("edge")


def test_redis_outage_and_reconnect_are_counted(
    processes: CliProcesses, redis_factory: object, prefix: str
) -> None:
    server = redis_factory()  # type: ignore[operator]
    port, metrics = free_port(), free_port()
    processes.start(
        "edge",
        [
            *("edge", "--route", "/=fidelity", "--redis", server.url, "--prefix", prefix),
            *("--port", str(port), "--pickup-timeout", "0.5", "--metrics-port", str(metrics)),
        ],
    )
    processes.wait_for_port("edge", port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        assert client.get("/").status_code == 503  # connected, no worker
        server.stop()
        assert client.get("/").status_code == 503  # Redis down
        server.start()
        assert client.get("/").status_code == 503  # reconnected, still no worker
    samples = scrape(metrics)
    (outages,) = [v for (n, _), v in samples.items() if n == "distributed_asgi_redis_outages_total"]
    (back,) = [v for (n, _), v in samples.items() if n == "distributed_asgi_redis_reconnects_total"]
    assert outages >= 1
    assert back >= 1
    assert (
        value(
            samples,
            "distributed_asgi_edge_requests_total",
            key="fidelity",
            status="503",
            outcome="redis_down",
        )
        == 1
    )
