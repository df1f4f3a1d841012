"""A Sentinel hosts entry against a real master and a real sentinel process."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.shard import CONNECTION_ERRORS
from distributed_asgi.ops.redis_process import RedisProcess, free_port


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    """Wait until ``condition()`` holds; fail naming it after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition}")
        await asyncio.sleep(0.05)


@pytest.fixture
def sentinel(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path
) -> Iterator[tuple[RedisProcess, int]]:
    master = redis_factory()
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
    )
    process = subprocess.Popen(
        [master.binary, str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        yield master, port
    finally:
        process.terminate()
        process.wait(5)


async def test_layer_finds_the_master_through_sentinel(
    sentinel: tuple[RedisProcess, int], prefix: str
) -> None:
    _, port = sentinel
    layer = RedisChannelLayer(
        hosts=[{"sentinels": [("127.0.0.1", port)], "master_name": "mymaster"}], prefix=prefix
    )
    try:
        channel = await layer.new_channel()
        await layer.group_add("watchers", channel)
        await layer.group_send("watchers", {"via": "sentinel"})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"via": "sentinel"}
    finally:
        await layer.flush()
        await layer.close()


@pytest.fixture
def sentinel_pair(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path
) -> Iterator[tuple[RedisProcess, RedisProcess, int]]:
    """A master, its replica and one sentinel that fails over half a second after a loss."""
    # Diskless sync waits 5 s by default for more replicas to share one transfer; one will do.
    master = redis_factory(args=["--repl-diskless-sync-delay", "0"])
    replica = redis_factory(args=["--replicaof", "127.0.0.1", str(master.port)])
    # A replica in sync before the sentinel starts is in the sentinel's first look at the
    # master, instead of after its next 10 s INFO round.
    deadline = time.monotonic() + 20
    with redis.Redis(host="127.0.0.1", port=replica.port, decode_responses=True) as client:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync in 20 s")
            time.sleep(0.05)
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 500\n"
        "sentinel failover-timeout mymaster 5000\n"
    )
    process = subprocess.Popen(
        [master.binary, str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Fail over only once the sentinel knows a replica that is in sync.
        deadline = time.monotonic() + 20
        while True:
            try:
                with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
                    replicas = client.sentinel_slaves("mymaster")
                if any(r["master-link-status"] == "ok" for r in replicas):
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel did not discover the replica in 20 s")
            time.sleep(0.1)
        yield master, replica, port
    finally:
        process.terminate()
        process.wait(5)


async def test_layer_follows_a_failover_under_load(
    sentinel_pair: tuple[RedisProcess, RedisProcess, int], prefix: str
) -> None:
    """SIGKILL the master while messages flow; traffic resumes on the promoted replica."""
    master, replica, port = sentinel_pair
    hosts = [{"sentinels": [("127.0.0.1", port)], "master_name": "mymaster"}]
    sender = RedisChannelLayer(hosts=hosts, prefix=prefix)
    receiver = RedisChannelLayer(hosts=hosts, prefix=prefix)
    received: list[tuple[int, float]] = []  # (message number, when received)
    sent_at: dict[int, float] = {}
    failed_sends = 0
    stopping = asyncio.Event()

    async def produce() -> None:
        nonlocal failed_sends
        number = 0
        while not stopping.is_set():
            # A send is dated by its start: one that started before the kill can complete
            # after it (its reply already on the way), served by the old master.
            started = time.monotonic()
            try:
                await sender.send("load.steady", {"n": number})
                sent_at[number] = started
                number += 1
            except CONNECTION_ERRORS:
                failed_sends += 1  # fails fast while no master answers; keep trying
            await asyncio.sleep(0.01)

    async def consume() -> None:
        while True:  # until cancelled: every message sent is waited for, the last one too
            message = await receiver.receive("load.steady")
            received.append((message["n"], time.monotonic()))

    tasks = [asyncio.ensure_future(produce()), asyncio.ensure_future(consume())]
    try:
        await asyncio.sleep(1.0)
        assert len(received) > 20, "no steady traffic before the failover"
        assert master.process is not None
        killed_at = time.monotonic()
        master.process.send_signal(signal.SIGKILL)
        master.process.wait()

        # Traffic has resumed when a message sent after the kill is received.
        deadline = killed_at + 30
        while time.monotonic() < deadline:
            late = [at for n, at in received if sent_at.get(n, 0) > killed_at]
            if late:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no traffic 30 s after the master was killed ({failed_sends=})")
        resumed = late[0] - killed_at
        first_send = min(at for at in sent_at.values() if at > killed_at) - killed_at
        print(
            f"\nSentinel failover: traffic resumed {resumed:.2f} s after SIGKILL of the master "
            f"(first send accepted after {first_send:.2f} s, {failed_sends} sends failed fast)"
        )

        # After the failover nothing is lost: every message sent after traffic resumed
        # arrives, in order. Deadlines, not fixed sleeps: a loaded machine is slow, not wrong.
        await _until(lambda: sum(at > late[0] for at in sent_at.values()) >= 20, 20)
        stopping.set()
        await asyncio.wait_for(tasks[0], 10)
        expected = sorted(n for n, at in sent_at.items() if at > late[0])
        await _until(lambda: expected[-1] in {n for n, _ in received}, 20)
        after = [n for n, _ in received if sent_at.get(n, 0) > late[0]]
        assert after == sorted(after)
        assert sorted(set(after)) == expected, (after[-5:], expected[-5:])
        assert resumed < 10
        with redis.Redis(host="127.0.0.1", port=replica.port, decode_responses=True) as client:
            assert client.info("replication")["role"] == "master"
    finally:
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.close()
        await receiver.close()


async def test_two_databases_behind_one_sentinel_are_two_shards(
    sentinel: tuple[RedisProcess, int], prefix: str
) -> None:
    master, port = sentinel
    hosts = [
        {"sentinels": [("127.0.0.1", port)], "master_name": "mymaster", "db": db} for db in (0, 1)
    ]
    layer = RedisChannelLayer(hosts=hosts, prefix=prefix)
    try:
        channels = [f"test.sentinel-db{i}" for i in range(40)]
        for channel in channels:
            await layer.send(channel, {"to": channel})
        for db in (0, 1):
            client = redis.Redis(host="127.0.0.1", port=master.port, db=db)
            queues = list(client.scan_iter(match=f"{prefix}:q:*"))
            client.close()
            assert len(queues) > 5, f"db {db} holds {len(queues)} queues"
        for channel in channels:
            assert await asyncio.wait_for(layer.receive(channel), 5) == {"to": channel}
    finally:
        await layer.flush()
        await layer.close()
