"""The gateway on scaled-out layers: three shards, a Redis Cluster, local+central, Valkey.

Each test runs a real uvicorn edge and real Node processes, drives them with httpx and a
WebSocket client, and checks on the servers themselves that the traffic went where it should.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import connect

from distributed_asgi.layers.hashring import HashRing
from distributed_asgi.layers.hosts import parse_hosts
from distributed_asgi.ops.redis_process import RedisClusterProcess, RedisProcess
from tests.gateway.fixtures import Gateway

LAYER_RUNNER = Path(__file__).with_name("layer_runner.py")
SCALE_APP = "tests.gateway.apps.scale:app"


class LayerGateway(Gateway):
    """A Gateway whose processes build their layer from ``hosts`` (and ``local_hosts``)."""

    def __init__(
        self,
        hosts: list[Any],
        prefix: str,
        workdir: Path,
        local_hosts: list[Any] | None = None,
    ) -> None:
        super().__init__("", prefix, workdir)
        self.hosts = hosts
        self.local_hosts = local_hosts

    def _spawn(self, kind: str, config: dict[str, Any], env: dict[str, str] | None = None) -> Any:
        config = {**config, "hosts": self.hosts, "local_hosts": self.local_hosts}
        log = self.workdir / f"{kind}-{len(self.processes)}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                [sys.executable, str(LAYER_RUNNER), kind, json.dumps(config)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        self.processes.append((process, log))
        return process, log


@pytest.fixture
def layer_gateways(tmp_path: Path, prefix: str) -> Iterator[Callable[..., LayerGateway]]:
    made: list[LayerGateway] = []

    def make(hosts: list[Any], local_hosts: list[Any] | None = None) -> LayerGateway:
        gateway = LayerGateway(hosts, prefix, tmp_path, local_hosts)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.stop()


def _calls(url: str) -> dict[str, int]:
    """Commands this server has run so far, by name."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _drive(gateway: Gateway, paths: list[str], rounds: int) -> set[int]:
    """HTTP requests and a WebSocket conversation per path; the Node pids that answered."""
    pids = set()
    with httpx.Client(base_url=gateway.url(), timeout=30) as client:
        for index, path in itertools.product(range(rounds), paths):
            response = client.post(f"{path}/{index}", content=b"x" * index)
            assert response.status_code == 200, response.text
            data = response.json()
            assert (data["path"], data["length"]) == (f"{path}/{index}", index)
            pids.add(data["pid"])
    for path in paths:
        with connect(gateway.url(f"{path}/ws", "ws")) as ws:
            for index in range(5):
                ws.send(f"{path}-{index}")
                assert ws.recv(timeout=10) == f"echo:{path}-{index}"
    return pids


def test_gateway_and_layer_traffic_spread_over_three_shards(
    redis_factory: Callable[..., RedisProcess],
    layer_gateways: Callable[..., LayerGateway],
) -> None:
    servers = [redis_factory() for _ in range(3)]
    urls = [server.url for server in servers]
    # One route channel per shard, found on the same ring the layer builds from these hosts.
    ring = HashRing([spec.identity for spec in parse_hosts(urls)])
    keys: dict[int, str] = {}
    for index in itertools.count():
        keys.setdefault(ring.shard_for(f"svc-{index}"), f"svc-{index}")
        if len(keys) == 3:
            break
    routes = [[f"^/{key}/", key] for key in keys.values()]

    # Two edges (as behind a TCP load balancer) and two Nodes, all on the three shards.
    gateway = layer_gateways(urls)
    edge_ports = []
    for _ in range(2):
        gateway.start_edge(routes=routes)
        edge_ports.append(gateway.port)
    for _ in range(2):
        gateway.start_node(app=SCALE_APP, keys=list(keys.values()))
    before = [_calls(url) for url in urls]
    for port in edge_ports:
        gateway.port = port
        _drive(gateway, [f"/{key}" for key in keys.values()], rounds=5)

    for shard, (url, old) in enumerate(zip(urls, before, strict=True)):
        new = _calls(url)
        sent = new.get("rpush", 0) - old.get("rpush", 0)
        popped = new.get("lpop", 0) - old.get("lpop", 0)
        # Each shard carried its route channel (2 edges x 6 connects, one RPUSH each: the
        # requests go one at a time; bodies ride along) and a Node popped it.
        assert sent >= 12 and popped >= 1, (shard, sent, popped, gateway.logs()[-3000:])
        with redis.Redis.from_url(url) as client:
            queues = [k for k in client.scan_iter(match=f"{gateway.prefix}:q:svc-*")]
            assert [k for k in queues if client.llen(k)] == []  # nothing stranded


def test_gateway_on_a_redis_cluster(redis_cluster: RedisClusterProcess, gateway: Gateway) -> None:
    """The ordinary gateway (url=...) on a cluster: the URL alone selects cluster mode."""
    gateway.redis_url = redis_cluster.url
    keys = [f"svc-{index}" for index in range(6)]
    gateway.start_edge(routes=[[f"^/{key}/", key] for key in keys])
    gateway.start_node(app=SCALE_APP, keys=keys)
    before = [_calls(f"redis://127.0.0.1:{port}") for port in redis_cluster.ports]
    _drive(gateway, [f"/{key}" for key in keys], rounds=3)
    for port, old in zip(redis_cluster.ports, before, strict=True):
        new = _calls(f"redis://127.0.0.1:{port}")
        assert new.get("rpush", 0) > old.get("rpush", 0), (port, gateway.logs()[-3000:])


def test_gateway_with_local_and_central_servers(
    redis_url: str,
    local_server: RedisProcess,
    layer_gateways: Callable[..., LayerGateway],
) -> None:
    """Route channels through the machine-local server, replies through the central one."""
    gateway = layer_gateways([redis_url], local_hosts=[local_server.unix_url])
    gateway.start_edge(routes=[["^/local/", "svc-local"]])
    gateway.start_node(app=SCALE_APP, keys=["svc-local"])
    before_local = _calls(local_server.url)
    before_central = _calls(redis_url)
    _drive(gateway, ["/local"], rounds=10)
    local_calls = _calls(local_server.url)
    central_calls = _calls(redis_url)
    # 10 requests and a WebSocket: connects and request bodies locally, replies centrally.
    assert local_calls.get("rpush", 0) - before_local.get("rpush", 0) >= 10
    assert local_calls.get("lpop", 0) - before_local.get("lpop", 0) >= 10
    assert central_calls.get("rpush", 0) - before_central.get("rpush", 0) >= 20


def test_gateway_http_and_websocket_on_valkey(
    valkey_server: RedisProcess, prefix: str, tmp_path: Path
) -> None:
    gateway = Gateway(valkey_server.url, prefix, tmp_path)
    try:
        gateway.start_edge()
        gateway.start_node()
        with httpx.Client(base_url=gateway.url(), timeout=30) as client:
            response = client.get("/hello")
            assert (response.status_code, response.text) == (200, "hello, world")
        with connect(gateway.url("/ws", "ws")) as ws:
            ws.send("on valkey")
            assert ws.recv(timeout=10) == "echo:on valkey"
        assert _calls(valkey_server.url).get("rpush", 0) > 0
    finally:
        gateway.stop()
