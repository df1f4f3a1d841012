"""`distributed-asgi status` against a real Redis, edge and Node processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from distributed_asgi.ops.redis_process import free_port
from tests.gateway.cli_processes import CliProcesses
from tests.gateway.fixtures import ROOT, Gateway

# Short heartbeats make the presence TTL (three of them) 1.5 s.
BEAT = 0.5


def status(gateway: Gateway, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "distributed_asgi", "status", "--json"),
            *("--redis", gateway.redis_url, "--prefix", gateway.prefix, *extra),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    snapshot: dict[str, Any] = json.loads(result.stdout)
    return snapshot


def eventually(
    gateway: Gateway, check: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        snapshot = status(gateway)
        if check(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched: {snapshot}\n{gateway.logs()}")
        time.sleep(0.2)


def route(snapshot: dict[str, Any], key: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for r in snapshot["routes"] if r["key"] == key]
    (only,) = found
    return only


def test_status_lists_the_node_its_key_and_the_backlog(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=30)
    node, _ = gateway.start_node(max_applications=1, heartbeat_interval=BEAT)
    answers: list[int] = []

    def get(path: str) -> None:
        answers.append(httpx.get(gateway.url(path), timeout=60).status_code)

    # One slow request fills the Node (max_applications=1); the next two wait in Redis.
    slow = threading.Thread(target=get, args=("/pid?sleep=4&marker=busy",))
    slow.start()
    gateway.wait_marker("busy")
    waiting = [threading.Thread(target=get, args=("/hello",)) for _ in range(2)]
    for thread in waiting:
        thread.start()

    snapshot = eventually(gateway, lambda s: route(s, "fidelity")["backlog"] == 2)
    fidelity = route(snapshot, "fidelity")
    assert fidelity["nodes"] == 1
    assert fidelity["capacity"] == 1000  # the route channel's backlog (DEFAULT_BACKLOG)
    assert fidelity["oldest_age"] is not None and 0 <= fidelity["oldest_age"] < 10
    assert fidelity["retried"] == 0  # tests/gateway/test_retries.py counts one
    (entry,) = snapshot["nodes"]
    assert entry["pid"] == node.pid
    assert entry["keys"] == ["fidelity"]
    assert entry["concurrency"] == 1
    assert entry["heartbeat_age"] < 3 * BEAT + 1
    # Presence is refreshed every heartbeat: the slow request shows in flight.
    snapshot = eventually(gateway, lambda s: s["nodes"][0]["in_flight"] == 1)

    slow.join()
    for thread in waiting:
        thread.join()
    assert answers == [200, 200, 200]
    snapshot = eventually(
        gateway,
        lambda s: route(s, "fidelity")["backlog"] == 0 and s["nodes"][0]["served"] == 3,
    )
    assert snapshot["nodes"][0]["errors"] == 0
    assert snapshot["nodes"][0]["in_flight"] == 0

    # An application error counts as served and as an error.
    assert httpx.get(gateway.url("/error-before"), timeout=30).status_code == 500
    eventually(gateway, lambda s: s["nodes"][0]["served"] == 4 and s["nodes"][0]["errors"] == 1)


def test_a_queue_nobody_listens_on_is_shown(gateway: Gateway) -> None:
    gateway.start_edge(routes=[["^/", "orphan"]], pickup_timeout=3)
    thread = threading.Thread(target=lambda: httpx.get(gateway.url("/"), timeout=30))
    thread.start()
    try:
        snapshot = eventually(
            gateway, lambda s: any(r["key"] == "orphan" for r in s["routes"]), timeout=10
        )
        orphan = route(snapshot, "orphan")
        assert orphan["backlog"] == 1
        assert orphan["nodes"] == 0
        assert snapshot["nodes"] == []
        # Process inboxes (names with "!") are not route channels.
        assert all("!" not in r["key"] for r in snapshot["routes"])
    finally:
        thread.join()


def test_a_killed_node_disappears_after_the_ttl_a_stopped_one_at_once(gateway: Gateway) -> None:
    killed, _ = gateway.start_node(heartbeat_interval=BEAT)
    stopped, _ = gateway.start_node(heartbeat_interval=BEAT)
    snapshot = eventually(gateway, lambda s: len(s["nodes"]) == 2)
    assert {n["pid"] for n in snapshot["nodes"]} == {killed.pid, stopped.pid}

    stopped.send_signal(signal.SIGTERM)
    stopped.wait(15)
    pids = {n["pid"] for n in status(gateway)["nodes"]}
    assert stopped.pid not in pids
    assert killed.pid in pids

    killed.kill()
    killed.wait()
    gone_by = time.monotonic() + 3 * BEAT + 3
    eventually(gateway, lambda s: s["nodes"] == [], timeout=3 * BEAT + 5)
    assert time.monotonic() < gone_by


def test_status_fails_naming_an_unreachable_redis() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distributed_asgi", "status", "--redis", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 1
    assert "Error: cannot read the status from redis://127.0.0.1:1/0" in result.stderr


def test_status_table_shows_the_node(gateway: Gateway) -> None:
    node, _ = gateway.start_node(heartbeat_interval=BEAT)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "distributed_asgi", "status"),
            *("--redis", gateway.redis_url, "--prefix", gateway.prefix),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Route channels" in result.stdout
    assert "fidelity" in result.stdout
    assert f"pid {node.pid}" in result.stdout


@pytest.mark.parametrize("topology", ["sharded", "cluster"])
def test_status_on_sharded_servers_and_on_a_cluster(
    topology: str,
    request: pytest.FixtureRequest,
    prefix: str,
    tmp_path: Path,
) -> None:
    if topology == "cluster":
        urls = [request.getfixturevalue("redis_cluster").url]
    else:
        factory = request.getfixturevalue("redis_factory")
        urls = [factory().url for _ in range(3)]
    layer = [*(arg for url in urls for arg in ("--redis", url)), "--prefix", prefix]
    processes = CliProcesses(tmp_path)
    port = free_port()
    try:
        for name in ("a", "b"):
            processes.start(
                name, ["worker", "tests.gateway.apps.fidelity:app", "--key", name, *layer]
            )
        for name in ("a", "b"):
            processes.wait_for(name, lambda text: "Node listening" in text)
        processes.start(
            "edge",
            ["edge", "--route", "^/=orphan", "--port", str(port), "--pickup-timeout", "1", *layer],
        )
        processes.wait_for_port("edge", port)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 503
        result = subprocess.run(
            [sys.executable, "-m", "distributed_asgi", "status", "--json", *layer],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        snapshot = json.loads(result.stdout)
        pids = {processes.processes[name].pid for name in ("a", "b")}
        assert {n["pid"] for n in snapshot["nodes"]} == pids
        routes = {r["key"]: r for r in snapshot["routes"]}
        assert set(routes) == {"a", "b", "orphan"}
        assert routes["a"]["nodes"] == routes["b"]["nodes"] == 1
        # The refused connect stays queued (until its expiry) where the layer put it.
        assert routes["orphan"]["backlog"] == 1
        assert routes["orphan"]["nodes"] == 0
    finally:
        processes.stop()


def test_watch_json_streams_snapshots_until_interrupted(gateway: Gateway) -> None:
    gateway.start_node(heartbeat_interval=BEAT)
    watcher = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed_asgi", "status", "--watch", "--json"),
            *("--interval", "0.2", "--redis", gateway.redis_url, "--prefix", gateway.prefix),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert watcher.stdout is not None
        first, second = (json.loads(watcher.stdout.readline()) for _ in range(2))
        assert second["time"] > first["time"]
        assert len(second["nodes"]) == 1
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
