"""Redis Cluster: a real three-master cluster, keys spread over it, and a slot that moves.

The conformance suite runs on the cluster too (the "cluster" param of ``make_layer``); this file
checks what is particular to a cluster.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from distributed_asgi.layers import LayerRefused, LayerUnavailable, RedisChannelLayer
from distributed_asgi.layers.cluster import ClusterPlacement, RedisClusterChannelLayer
from distributed_asgi.ops.redis_process import (
    RedisClusterProcess,
    ServerBinaryNotFound,
    find_server_binary,
)


def _command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _clients(cluster: RedisClusterProcess) -> list[redis.Redis]:
    return [redis.Redis(host="127.0.0.1", port=port) for port in cluster.ports]


def _owner(cluster: RedisClusterProcess, slot: int) -> int:
    """Index in cluster.ports of the master that serves ``slot``."""
    with redis.Redis(host="127.0.0.1", port=cluster.ports[0]) as client:
        for first, last, master, *_ in _command(client, "CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return cluster.ports.index(int(master[1]))
    raise AssertionError(f"slot {slot} has no master")


def _move_slot(cluster: RedisClusterProcess, slot: int, target: int) -> None:
    """Migrate ``slot`` with its keys to master ``target``, as redis-cli --cluster reshard does."""
    source = _owner(cluster, slot)
    clients = _clients(cluster)
    try:
        ids = [_command(c, "CLUSTER", "MYID").decode() for c in clients]
        src, dst = clients[source], clients[target]
        _command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        _command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while keys := _command(src, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            _command(src, "MIGRATE", "127.0.0.1", cluster.ports[target], "", 0, 5000, "KEYS", *keys)
        for client in clients:
            _command(client, "CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    finally:
        for client in clients:
            client.close()


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    """Wait until ``condition()`` holds; fail naming it after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition}")
        await asyncio.sleep(0.05)


def _key_counts(cluster: RedisClusterProcess, prefix: str) -> list[int]:
    counts = []
    for client in _clients(cluster):
        counts.append(sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000)))
        client.close()
    return counts


async def test_a_cluster_url_selects_the_cluster_placement(
    redis_cluster: RedisClusterProcess, prefix: str
) -> None:
    layer = RedisChannelLayer(hosts=[redis_cluster.url], prefix=prefix)
    # The same class, not a subclass picked by __new__: only the placement differs.
    assert type(layer) is RedisChannelLayer
    assert isinstance(layer.placement, ClusterPlacement)
    assert "cluster=redis+cluster://" in repr(layer)
    with pytest.raises(AttributeError, match="no hash ring"):
        layer.ring  # noqa: B018
    forced = RedisClusterChannelLayer(hosts=[redis_cluster.url], prefix=prefix)
    assert isinstance(forced.placement, ClusterPlacement)
    with pytest.raises(ValueError, match="RedisClusterChannelLayer needs a redis\\+cluster://"):
        RedisClusterChannelLayer(hosts=["redis://localhost:6379/0"])
    await layer.close()
    await forced.close()


async def test_keys_and_group_members_spread_over_every_master(
    redis_cluster: RedisClusterProcess, prefix: str
) -> None:
    sender = RedisChannelLayer(hosts=[redis_cluster.url], prefix=prefix)
    receiver = RedisChannelLayer(hosts=[redis_cluster.url], prefix=prefix)
    try:
        specific = [await receiver.new_channel(f"p{i}") for i in range(30)]
        normal = [f"test.normal{i}" for i in range(30)]
        for channel in specific + normal:
            await receiver.group_add("spread", channel)
        await sender.group_send("spread", {"group": True})
        counts = _key_counts(redis_cluster, prefix)
        # Every master holds queues and memberships, not one master everything.
        assert all(count > 5 for count in counts), counts
        for channel in specific + normal:
            assert await asyncio.wait_for(receiver.receive(channel), 5) == {"group": True}
        # Each script touched one slot: the queue, counters and memberships share a tag.
        inbox = specific[0].split("!")[0] + "!"
        tagged = receiver._queue_keys(specific[0])[1]
        assert inbox in tagged[0]
        assert len({key_slot(k.encode()) for k in tagged}) == 1
    finally:
        await sender.flush()
        await sender.close()
        await receiver.close()


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_layer_follows_a_slot_moved_to_another_master(
    redis_cluster: RedisClusterProcess, prefix: str, kind: str
) -> None:
    layer = RedisChannelLayer(hosts=[redis_cluster.url], prefix=prefix)
    other = RedisChannelLayer(hosts=[redis_cluster.url], prefix=prefix)
    try:
        channel = "test.moving" if kind == "normal" else await layer.new_channel()
        await layer.group_add("movers", channel)
        await other.send(channel, {"n": 1})
        await other.send(channel, {"n": 2})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"n": 1}
        # A receive is waiting on the old master while its slot moves.
        waiting = asyncio.ensure_future(layer.receive(channel))
        assert await asyncio.wait_for(waiting, 5) == {"n": 2}
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.2)

        queue_key = layer._queue_keys(channel)[1][0]
        slot = key_slot(queue_key.encode())
        source = _owner(redis_cluster, slot)
        target = (source + 1) % len(redis_cluster.ports)
        await asyncio.to_thread(_move_slot, redis_cluster, slot, target)
        assert _owner(redis_cluster, slot) == target

        # Both layers still hold the old map: they get MOVED, reload it and carry on.
        await other.send(channel, {"n": 3})
        assert await asyncio.wait_for(waiting, 10) == {"n": 3}
        await other.group_send("movers", {"n": 4})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"n": 4}
    finally:
        await layer.flush()
        await layer.close()
        await other.close()


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (["redis+cluster://127.0.0.1:7000/3"], "only database 0"),
        (["redis+cluster://127.0.0.1:notaport"], "port must be a number"),
        (["redis+cluster://127.0.0.1"], "is not host:port"),
        (["redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:6379"], "only entry in hosts"),
    ],
)
def test_bad_cluster_settings_fail_at_start_up(hosts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisChannelLayer(hosts=hosts)


def test_a_brace_in_the_prefix_is_refused_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="prefix must not contain braces"):
        RedisChannelLayer(hosts=["redis+cluster://127.0.0.1:7000"], prefix="asgi{x}")


def test_startup_nodes_dict() -> None:
    layer = RedisChannelLayer(
        hosts=[{"startup_nodes": [("10.0.0.1", 7000), ["::1", "7001"]], "password": "pw"}]
    )
    assert isinstance(layer.placement, ClusterPlacement)
    spec = layer.placement.spec
    assert spec.startup_nodes() == [("10.0.0.1", 7000), ("::1", 7001)]
    assert spec.node_spec("10.0.0.9", 7005).kwargs == {"password": "pw"}
    with pytest.raises(ValueError, match=r"hosts\[0\]\['startup_nodes'\] entry 'x'"):
        RedisChannelLayer(hosts=[{"startup_nodes": ["x"]}])
    with pytest.raises(ValueError, match="port must be a number"):
        RedisChannelLayer(hosts=[{"startup_nodes": [("h", "p")]}])


async def test_startup_nodes_reach_a_real_cluster(
    redis_cluster: RedisClusterProcess, prefix: str
) -> None:
    nodes = [("127.0.0.1", port) for port in redis_cluster.ports[1:]]
    layer = RedisChannelLayer(hosts=[{"startup_nodes": nodes}], prefix=prefix)
    try:
        await layer.send("test.dict", {"ok": True})
        assert await asyncio.wait_for(layer.receive("test.dict"), 5) == {"ok": True}
    finally:
        await layer.close()


def test_cluster_url_forms() -> None:
    layer = RedisChannelLayer(
        hosts=[{"address": "rediss+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001", "ssl": True}]
    )
    assert isinstance(layer.placement, ClusterPlacement)
    spec = layer.placement.spec
    assert spec.startup_nodes() == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    node = spec.node_spec("10.0.0.9", 7005)
    assert node.url == "rediss://:pw@10.0.0.9:7005"
    assert "pw" not in spec.describe()


async def test_before_the_cluster_is_up_send_fails_fast_and_receive_waits(prefix: str) -> None:
    cluster = RedisClusterProcess(masters=3)
    layer = RedisChannelLayer(hosts=[cluster.url], prefix=prefix)
    try:
        waiting = asyncio.ensure_future(layer.receive("test.early"))
        with pytest.raises(LayerUnavailable):
            await asyncio.wait_for(layer.send("test.early", {"n": 0}), 5)
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await asyncio.to_thread(cluster.start)
        await layer.send("test.early", {"n": 1})
        assert await asyncio.wait_for(waiting, 10) == {"n": 1}
    finally:
        await layer.close()
        cluster.close()


async def test_layer_follows_a_cluster_failover_under_load(prefix: str) -> None:
    """SIGKILL the master of a busy channel's slot; its replica takes over and traffic resumes."""
    cluster = RedisClusterProcess(masters=3, replicas=1, node_timeout_ms=1000)
    await asyncio.to_thread(cluster.start)
    sender = RedisChannelLayer(hosts=[cluster.url], prefix=prefix)
    receiver = RedisChannelLayer(hosts=[cluster.url], prefix=prefix)
    received: list[tuple[int, float]] = []
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
                await sender.send("load.cluster", {"n": number})
                sent_at[number] = started
                number += 1
            except (LayerUnavailable, LayerRefused):  # while a replica takes over
                failed_sends += 1
            await asyncio.sleep(0.01)

    async def consume() -> None:
        while True:  # until cancelled: every message sent is waited for, the last one too
            message = await receiver.receive("load.cluster")
            received.append((message["n"], time.monotonic()))

    tasks = [asyncio.ensure_future(produce()), asyncio.ensure_future(consume())]
    try:
        await asyncio.sleep(1.0)
        assert len(received) > 20, "no steady traffic before the failover"
        queue_key = sender._queue_keys("load.cluster")[1][0]
        victim = cluster.nodes[_owner(cluster, key_slot(queue_key.encode()))]
        assert victim.process is not None
        killed_at = time.monotonic()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()

        deadline = killed_at + 30
        while time.monotonic() < deadline:
            late = [at for n, at in received if sent_at.get(n, 0) > killed_at]
            if late:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no traffic 30 s after the master was killed ({failed_sends=})")
        resumed = late[0] - killed_at
        print(
            f"\nCluster failover: traffic resumed {resumed:.2f} s after SIGKILL of the master "
            f"(cluster-node-timeout 1000 ms, {failed_sends} sends failed meanwhile)"
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
        assert resumed < 15
    finally:
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.close()
        await receiver.close()
        cluster.close()


async def test_a_valkey_cluster(prefix: str) -> None:
    """The same layer on a Valkey cluster (the embedded valkey-server): direct and group."""
    try:
        binary = find_server_binary("valkey")
    except ServerBinaryNotFound:
        pytest.skip("no valkey-server on this machine")
    cluster = RedisClusterProcess(masters=3, binary=binary)
    await asyncio.to_thread(cluster.start)
    layer = RedisChannelLayer(hosts=[cluster.url], prefix=prefix)
    try:
        # One process's channels share one inbox (one slot); normal channels spread.
        members = [await layer.new_channel() for _ in range(3)] + [f"test.v{i}" for i in range(30)]
        for channel in members:
            await layer.group_add("valkey", channel)
        await layer.group_send("valkey", {"on": "valkey"})
        for channel in members:
            assert await asyncio.wait_for(layer.receive(channel), 5) == {"on": "valkey"}
        counts = _key_counts(cluster, prefix)
        assert all(count > 0 for count in counts), counts
    finally:
        await layer.close()
        cluster.close()
