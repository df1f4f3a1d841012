"""Every core of a machine: ``worker --processes N`` (ops/pool.py) and ``edge --workers N``
(uvicorn's multi-process mode), run through the real command line with a real Redis, real
clients and the fidelity app: each serves, replaces a process that dies, and on SIGTERM lets
every process finish its requests and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.counters import child_pids
from distributed_asgi.ops.redis_process import free_port
from tests.gateway.cli_processes import CliProcesses
from tests.gateway.fixtures import FIDELITY_APP

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[CliProcesses]:
    processes = CliProcesses(tmp_path)
    yield processes
    processes.stop()


def _children(parent: subprocess.Popen[bytes]) -> set[int]:
    return child_pids(parent.pid)


def _wait_children(parent: subprocess.Popen[bytes], count: int, timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _children(parent)
        if len(children) == count:
            return children
        time.sleep(0.05)
    raise AssertionError(f"{parent.args!r}: {len(_children(parent))} children, not {count}")


def _pids_serving(url: str, requests: int) -> set[int]:
    """Nodes answering ``requests`` concurrent slow requests (each Node takes one at a time)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        answers: list[int] = []

        def get() -> None:
            answers.append(http.get("/pid", params={"sleep": "0.5"}).json()["pid"])

        threads = [threading.Thread(target=get) for _ in range(requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return set(answers)


def _slow_request_during_sigterm(url: str, process: subprocess.Popen[bytes]) -> int:
    """The status of a request in flight when ``process`` gets SIGTERM."""
    statuses: list[int] = []

    def get() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            statuses.append(http.get("/pid", params={"sleep": "1.5"}).status_code)

    thread = threading.Thread(target=get)
    thread.start()
    time.sleep(0.5)  # the request is with a Node by now
    process.send_signal(signal.SIGTERM)
    thread.join()
    return statuses[0]


def _worker(redis_url: str, prefix: str, *more: str) -> list[str]:
    args = ["worker", FIDELITY_APP, "--key", "fidelity", "--redis", redis_url]
    return [*args, "--prefix", prefix, "--log-level", "info", *more]


def _edge(redis_url: str, prefix: str, port: int, *more: str) -> list[str]:
    args = ["edge", "--route", "/=fidelity", "--port", str(port), "--redis", redis_url]
    return [*args, "--prefix", prefix, *more]


def test_worker_processes_serve_restart_a_crashed_one_and_drain_on_sigterm(
    cli: CliProcesses, redis_url: str, prefix: str
) -> None:
    port = free_port()
    cli.start("edge", _edge(redis_url, prefix, port))
    cli.wait_for_port("edge", port)
    pool = cli.start(
        "workers", _worker(redis_url, prefix, "--processes", "2", "--concurrency", "1")
    )
    first = _wait_children(pool, 2)
    cli.wait_for("workers", lambda text: text.count("Node listening") == 2)
    url = f"http://127.0.0.1:{port}"
    assert _pids_serving(url, 2) == first  # two processes, one request each at a time

    crashed = min(first)
    os.kill(crashed, signal.SIGKILL)
    cli.wait_for("workers", lambda text: "exited unexpectedly (killed by SIGKILL)" in text)
    cli.wait_for("workers", lambda text: text.count("Node listening") == 3)
    replaced = _wait_children(pool, 2)
    assert crashed not in replaced and len(replaced & first) == 1

    assert _slow_request_during_sigterm(url, pool) == 200
    assert pool.wait(30) == 0
    assert "all worker processes stopped" in cli.text("workers")


def test_edge_workers_share_the_port_replace_a_dead_one_and_drain_on_sigterm(
    cli: CliProcesses, redis_url: str, prefix: str
) -> None:
    cli.start("worker", _worker(redis_url, prefix))
    cli.wait_for("worker", lambda text: "Node listening" in text)
    port = free_port()
    edge = cli.start("edge", _edge(redis_url, prefix, port, "--workers", "2"))
    cli.wait_for_port("edge", port)
    first = _wait_children(edge, 2)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/hello").status_code == 200

    killed = min(first)
    os.kill(killed, signal.SIGKILL)
    # Between the kill and the replacement, the parent has one child (or still lists the
    # dead one): wait for two children of which the killed one is not.
    replaced = _children(edge)
    deadline = time.monotonic() + 30
    while (len(replaced) != 2 or killed in replaced) and time.monotonic() < deadline:
        time.sleep(0.1)
        replaced = _children(edge)
    assert len(replaced) == 2 and killed not in replaced, replaced
    with httpx.Client(base_url=url, timeout=10) as http:
        assert all(http.get("/hello").status_code == 200 for _ in range(10))

    assert _slow_request_during_sigterm(url, edge) == 200
    assert edge.wait(30) == 0


def test_edge_workers_refuse_a_single_metrics_port(
    cli: CliProcesses, redis_url: str, prefix: str
) -> None:
    args = _edge(
        redis_url, prefix, free_port(), "--workers", "2", "--metrics-port", str(free_port())
    )
    edge = cli.start("edge", args)
    assert edge.wait(30) != 0
    assert "--metrics-port serves one process's metrics" in cli.text("edge")
