"""The private Redis servers of the tests, the demo and the bench (ops/redis_process.py): a free
port taken by another process before the server binds it is picked again, and ``free_port``
does not hand the same port out twice."""

from __future__ import annotations

import socket

import pytest
import redis

from distributed_asgi.ops.redis_process import RedisClusterProcess, RedisProcess, free_port


def taken(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_free_port_never_picks_the_same_port_twice_in_a_row_of_picks() -> None:
    # A test picks a server's port and its metrics port before either listens: the kernel,
    # asked twice, can answer the same just-closed port (500 picks over its ~14,000 odd
    # ephemeral ports repeat about nine times).
    picks = [free_port() for _ in range(500)]
    assert len(set(picks)) == len(picks)


def test_a_picked_port_taken_before_start_is_picked_again() -> None:
    server = RedisProcess()
    first = server.port
    with taken(first):
        server.start()
        try:
            assert server.port != first
            assert redis.Redis.from_url(server.url).ping()
        finally:
            server.close()


def test_a_given_port_that_is_taken_fails_with_its_log() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with taken(port):
        server = RedisProcess(port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            server.start()
        server.close()


def test_a_cluster_bus_port_taken_before_start_is_picked_again() -> None:
    cluster = RedisClusterProcess(masters=1)
    first = cluster.bus_ports[0]
    with taken(first):
        cluster.start()
        try:
            assert cluster.bus_ports[0] != first
            node = redis.Redis(port=cluster.ports[0])
            info = node.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            assert b"cluster_state:ok" in info
            node.close()
        finally:
            cluster.close()


def test_a_restart_keeps_its_port_even_when_it_is_taken() -> None:
    """Clients know a server's port once it has run: a restart never moves it."""
    server = RedisProcess().start()
    port = server.port
    server.stop()
    try:
        with taken(port), pytest.raises(RuntimeError, match="Address already in use"):
            server.start()
        assert server.port == port
        server.start()  # free again
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.close()
