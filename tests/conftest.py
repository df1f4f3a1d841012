"""Test harness: private Redis-protocol servers on free loopback ports.

- ``redis_server``: one server for the whole session (or ``REDIS_URL`` when set).
- ``redis_url``: its URL; ``prefix``: a fresh key prefix per test, so tests never see each
  other's keys without flushing the server.
- ``redis_cluster``: a three-master Redis Cluster for the whole session (started on first use);
  ``local_server``: a second server on a unix socket (RedisLocalChannelLayer's local one).
- ``redis_factory``: start extra servers (several at once for sharding tests, or one to stop and
  restart); all are stopped at the end of the test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest

from distributed_asgi.ops.redis_process import (
    RedisClusterProcess,
    RedisProcess,
    ServerBinaryNotFound,
    find_server_binary,
)

# The gateway fixture (a uvicorn edge and Node processes) serves tests in every folder.
pytest_plugins = ["tests.gateway.fixtures"]


class _ExternalServer:
    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess | _ExternalServer]:
    if os.environ.get("REDIS_URL"):
        yield _ExternalServer(os.environ["REDIS_URL"])
        return
    server = RedisProcess().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[RedisProcess]:
    """A valkey-server (the ``embedded`` extra's binary), for running suites on Valkey too."""
    try:
        binary = find_server_binary("valkey")
    except ServerBinaryNotFound:
        pytest.skip("no valkey-server on this machine")
    server = RedisProcess(binary=binary).start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    """A real Redis Cluster of three masters (no replicas), shared by the whole session."""
    cluster = RedisClusterProcess(masters=3).start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def local_server() -> Iterator[RedisProcess]:
    """A second server on a unix socket: the machine-local one of RedisLocalChannelLayer."""
    server = RedisProcess(unix_socket=True).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisProcess | _ExternalServer) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisProcess]]:
    started: list[RedisProcess] = []

    def start(**kwargs: object) -> RedisProcess:
        server = RedisProcess(**kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
