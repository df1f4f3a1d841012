"""The channel layer contract, run against RedisChannelLayer and InMemoryChannelLayer alike."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from distributed_asgi.layers import (
    ChannelFull,
    InMemoryChannelLayer,
    LayerError,
    LayerRefused,
    LayerUnavailable,
    RedisChannelLayer,
    RedisLocalChannelLayer,
    WrongClientPrefix,
)
from distributed_asgi.layers.cluster import ClusterPlacement
from distributed_asgi.ops.redis_process import RedisClusterProcess, RedisProcess
from tests.layers.conftest import LayerFactory, assert_cancelled_receives_lose_nothing


async def test_send_receive_keeps_types(make_layer: LayerFactory) -> None:
    layer = make_layer()
    message = {
        "type": "test.message",
        "bytes": b"\x00\xff binary",
        "text": "snowman \u2603",
        "int": 2**40,
        "float": 1.5,
        "none": None,
        "list": [1, "two", b"three"],
        "nested": {"a": {"b": [True, False]}},
    }
    await layer.send("test.types", message)
    received = await asyncio.wait_for(layer.receive("test.types"), 5)
    assert received == message
    assert isinstance(received["bytes"], bytes)
    assert isinstance(received["text"], str)


async def test_received_message_is_a_copy(make_layer: LayerFactory) -> None:
    layer = make_layer()
    items = [1, 2]
    message = {"type": "test", "items": items}
    await layer.send("test.copy", message)
    items.append(3)
    received = await layer.receive("test.copy")
    assert received == {"type": "test", "items": [1, 2]}
    assert received is not message


async def test_messages_arrive_in_order(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=1000)
    for i in range(200):
        await layer.send("test.order", {"i": i})
    assert [(await layer.receive("test.order"))["i"] for _ in range(200)] == list(range(200))


async def test_a_process_channel_with_non_ascii_letters_delivers_and_keeps_capacity(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(capacity=2)
    channel = await layer.new_channel() + "é"
    await layer.send(channel, {"i": 1})
    await layer.send(channel, {"i": 2})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"i": 3})
    assert [(await asyncio.wait_for(layer.receive(channel), 5))["i"] for _ in range(2)] == [1, 2]
    await layer.send(channel, {"i": 4})  # received messages gave their capacity back
    assert (await asyncio.wait_for(layer.receive(channel), 5))["i"] == 4


async def test_concurrent_sends_keep_their_order_per_sender(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=1000)
    channel = await layer.new_channel()
    await asyncio.gather(*(layer.send(channel, {"i": i}) for i in range(300)))
    assert [(await layer.receive(channel))["i"] for _ in range(300)] == list(range(300))


@pytest.mark.parametrize(
    "name",
    ["", "has space", "bad/char", "é", "a" * 100, "two!bangs!here", 42, None, b"bytes"],
)
async def test_bad_channel_names_raise_type_error(make_layer: LayerFactory, name: object) -> None:
    layer = make_layer()
    with pytest.raises(TypeError):
        await layer.send(name, {"type": "x"})
    with pytest.raises(TypeError):
        await layer.receive(name)
    with pytest.raises(TypeError):
        await layer.group_add("group", name)


@pytest.mark.parametrize("name", ["", "has space", "with!bang", "a" * 100, 7])
async def test_bad_group_names_raise_type_error(make_layer: LayerFactory, name: object) -> None:
    layer = make_layer()
    with pytest.raises(TypeError):
        await layer.group_add(name, "test.channel")
    with pytest.raises(TypeError):
        await layer.group_send(name, {"type": "x"})


async def test_longest_valid_name_is_99(make_layer: LayerFactory) -> None:
    layer = make_layer()
    name = "a" * 99
    await layer.send(name, {"type": "x"})
    assert await layer.receive(name) == {"type": "x"}


async def test_message_must_be_a_dict(make_layer: LayerFactory) -> None:
    layer = make_layer()
    with pytest.raises(TypeError):
        await layer.send("test.channel", ["not", "a", "dict"])


async def test_new_channel_is_process_specific_and_unique(make_layer: LayerFactory) -> None:
    layer = make_layer()
    names = {await layer.new_channel() for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert "!" in name
        await layer.send(name, {"name": name})
    for name in names:
        assert (await asyncio.wait_for(layer.receive(name), 5))["name"] == name


async def test_new_channel_prefix(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel("custom")
    assert channel.startswith("custom.")
    await layer.send(channel, {"ok": 1})
    assert await layer.receive(channel) == {"ok": 1}


async def test_capacity_is_exact_for_normal_channels(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=3)
    for i in range(3):
        await layer.send("test.full", {"i": i})
    with pytest.raises(ChannelFull):
        await layer.send("test.full", {"i": 3})
    assert (await layer.receive("test.full"))["i"] == 0
    await layer.send("test.full", {"i": 3})
    with pytest.raises(ChannelFull):
        await layer.send("test.full", {"i": 4})
    assert [(await layer.receive("test.full"))["i"] for _ in range(3)] == [1, 2, 3]


async def test_capacity_is_exact_per_process_specific_channel(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=2)
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.send(first, {"n": 1})
    await layer.send(first, {"n": 2})
    with pytest.raises(ChannelFull):
        await layer.send(first, {"n": 3})
    # A sibling channel of the same process has its own capacity.
    await layer.send(second, {"n": 1})
    await layer.send(second, {"n": 2})
    with pytest.raises(ChannelFull):
        await layer.send(second, {"n": 3})
    assert await layer.receive(first) == {"n": 1}
    await layer.send(first, {"n": 3})
    assert [await layer.receive(first) for _ in range(2)] == [{"n": 2}, {"n": 3}]


async def test_capacity_one_ping_pong(make_layer: LayerFactory) -> None:
    """Capacity frees as soon as receive() returns, also when the receiver was idle-waiting."""
    layer = make_layer(capacity=1)
    channel = await layer.new_channel()
    for i in range(20):
        waiter = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.01)
        await layer.send(channel, {"i": i})
        assert (await asyncio.wait_for(waiter, 5))["i"] == i


async def test_channel_capacity_globs_and_regexes_first_match_wins(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(
        capacity=10,
        channel_capacity={
            "http.response!*": 2,
            re.compile(r"^websocket\.send\!.+"): 1,
            "http.*": 3,
        },
    )
    assert layer.capacity.for_channel("http.response!abc") == 2
    assert layer.capacity.for_channel("websocket.send!x") == 1
    assert layer.capacity.for_channel("http.request") == 3
    assert layer.capacity.for_channel("other") == 10
    for i in range(3):
        await layer.send("http.request", {"i": i})
    with pytest.raises(ChannelFull):
        await layer.send("http.request", {"i": 3})
    await layer.send("websocket.send!x", {})
    with pytest.raises(ChannelFull):
        await layer.send("websocket.send!x", {})


async def test_expired_messages_are_not_delivered(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry=1)
    await layer.send("test.expiry", {"old": True})
    channel = await layer.new_channel()
    await layer.send(channel, {"old": True})
    await asyncio.sleep(1.3)
    await layer.send("test.expiry", {"old": False})
    await layer.send(channel, {"old": False})
    assert await asyncio.wait_for(layer.receive("test.expiry"), 5) == {"old": False}
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"old": False}


async def test_expired_messages_free_their_capacity(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry=1, capacity=1)
    channel = await layer.new_channel()
    await layer.send(channel, {"n": 1})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"n": 2})
    await asyncio.sleep(1.3)
    await layer.send(channel, {"n": 3})
    assert await layer.receive(channel) == {"n": 3}


async def test_group_send_reaches_every_member(make_layer: LayerFactory) -> None:
    layer = make_layer()
    members = [await layer.new_channel() for _ in range(5)] + ["test.normal.member"]
    for channel in members:
        await layer.group_add("everyone", channel)
    await layer.group_add("everyone", members[0])  # adding twice is one membership
    await layer.group_send("everyone", {"hello": "all"})
    for channel in members:
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"hello": "all"}
    await layer.group_discard("everyone", members[1])
    await layer.group_send("everyone", {"second": True})
    for channel in [members[0], *members[2:]]:
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"second": True}
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(members[1]), 0.3)


async def test_group_send_to_empty_or_unknown_group_is_fine(make_layer: LayerFactory) -> None:
    layer = make_layer()
    await layer.group_send("nobody-here", {"x": 1})
    await layer.group_discard("nobody-here", "test.channel")


async def test_group_send_skips_full_members_and_logs_count(
    make_layer: LayerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    layer = make_layer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("mixed", full)
    await layer.group_add("mixed", free)
    await layer.send(full, {"filler": True})
    with caplog.at_level("WARNING", logger="distributed_asgi.layers"):
        await layer.group_send("mixed", {"group": True})
    assert "skipped 1 member(s) at capacity" in caplog.text
    assert await layer.receive(free) == {"group": True}
    assert await layer.receive(full) == {"filler": True}


async def test_group_membership_expires(make_layer: LayerFactory) -> None:
    layer = make_layer(group_expiry=1)
    channel = await layer.new_channel()
    await layer.group_add("short", channel)
    await asyncio.sleep(1.3)
    await layer.group_send("short", {"late": True})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.3)


async def test_cancelled_receive_loses_no_message(make_layer: LayerFactory) -> None:
    layer = make_layer()
    for channel in ["test.cancel", await layer.new_channel()]:
        await assert_cancelled_receives_lose_nothing(layer, channel, layer.send)


async def test_flush_removes_messages_and_groups(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.send("test.flush", {"x": 1})
    await layer.group_add("flushed", channel)
    await layer.flush()
    await layer.group_send("flushed", {"x": 2})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive("test.flush"), 0.3)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.3)


async def test_two_instances_talk(make_layer: LayerFactory) -> None:
    sender, receiver = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await receiver.group_add("pair", channel)
    await sender.send(channel, {"direct": True})
    await sender.group_send("pair", {"group": True})
    assert await asyncio.wait_for(receiver.receive(channel), 5) == {"direct": True}
    assert await asyncio.wait_for(receiver.receive(channel), 5) == {"group": True}


async def test_extensions(make_layer: LayerFactory) -> None:
    assert {"groups", "flush"} <= set(make_layer().extensions)


@pytest.mark.parametrize(
    "options",
    [{"capacity": 0}, {"capacity": "10"}, {"expiry": 0}, {"group_expiry": -1}],
)
def test_bad_options_fail_at_construction(
    make_layer: LayerFactory, options: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        make_layer(**options)


async def test_capacity_holds_while_siblings_are_being_received(
    make_layer: LayerFactory,
) -> None:
    """Messages a process has pulled from Redis but not yet received still count: a slow
    channel pushes back on its senders even while the process reads its other channels."""
    layer = make_layer(capacity=2)
    slow, busy = await layer.new_channel(), await layer.new_channel()
    reader = asyncio.ensure_future(layer.receive(busy))
    await asyncio.sleep(0.05)
    await layer.send(slow, {"n": 1})
    await layer.send(slow, {"n": 2})
    await layer.send(busy, {"n": 0})
    assert await asyncio.wait_for(reader, 5) == {"n": 0}
    for _ in range(3):  # keep the process reading while the slow channel stays full
        reader = asyncio.ensure_future(layer.receive(busy))
        await asyncio.sleep(0.05)
        with pytest.raises(ChannelFull):
            await layer.send(slow, {"n": 3})
        await layer.send(busy, {"n": 0})
        await asyncio.wait_for(reader, 5)
    assert [await layer.receive(slow) for _ in range(2)] == [{"n": 1}, {"n": 2}]
    await layer.send(slow, {"n": 3})
    assert await layer.receive(slow) == {"n": 3}


async def test_receive_refuses_a_process_channel_of_another_instance(
    make_layer: LayerFactory,
) -> None:
    """Another instance's new_channel() name, or a made-up one: refused at once (as
    channels_redis does), and the owner still gets its message."""
    layer = make_layer()
    # The memory factory hands out one instance (one process): another one is made here.
    owner = InMemoryChannelLayer() if isinstance(layer, InMemoryChannelLayer) else make_layer()
    theirs = await owner.new_channel()
    await owner.send(theirs, {"for": "owner"})
    for channel in [theirs, "specific.xyz!abc", "specific!abc"]:
        with pytest.raises(
            WrongClientPrefix,
            match=r"^Wrong client prefix: .*" + re.escape(repr(channel.split("!")[0])),
        ):
            await asyncio.wait_for(layer.receive(channel), 5)
    assert issubclass(WrongClientPrefix, AssertionError)
    assert await asyncio.wait_for(owner.receive(theirs), 5) == {"for": "owner"}
    mine = await layer.new_channel("any.prefix")
    await layer.send(mine, {"for": "me"})
    assert await asyncio.wait_for(layer.receive(mine), 5) == {"for": "me"}
    if owner is not layer:
        await owner.close()


# -- errors: the layer's own exceptions, whatever the layer kind -------------------------------


def _queue_layer(layer: Any) -> RedisChannelLayer:
    """The Redis layer that holds normal channels' queues (the local one of a local layer)."""
    if isinstance(layer, InMemoryChannelLayer):
        pytest.skip("the in-memory layer has no server to refuse or lose")
    return layer.local if isinstance(layer, RedisLocalChannelLayer) else layer


def test_layer_errors_are_the_layers_own() -> None:
    assert issubclass(LayerUnavailable, LayerError)
    assert issubclass(LayerRefused, LayerError)
    # A lost server is a lost connection: code that catches ConnectionError keeps working.
    assert issubclass(LayerUnavailable, ConnectionError)
    assert not issubclass(LayerRefused, ConnectionError)


async def test_locate_names_the_server_and_key_of_a_queue(make_layer: LayerFactory) -> None:
    layer = make_layer()
    queues = _queue_layer(layer)
    await layer.send("test.located", {"n": 1})
    server, key = await queues.locate("q", "test.located")
    assert key.startswith(f"{queues.prefix}:q:") and key.endswith("test.located")
    assert await server.execute(("LLEN", key)) == [1]
    found = [k for each in await queues.servers() for k in await each.scan(key)]
    assert found == [key.encode()]


async def test_refused_write_raises_layer_refused(make_layer: LayerFactory) -> None:
    """A route channel's key holding a string (WRONGTYPE): the server's refusal is the
    layer's ``LayerRefused``, naming the reply, with redis-py's error as its cause."""
    layer = make_layer()
    queues = _queue_layer(layer)
    server, key = await queues.locate("q", "test.refused")
    await server.execute(("SET", key, "not a list"))
    with pytest.raises(LayerRefused, match="WRONGTYPE") as caught:
        await layer.send("test.refused", {"n": 1})
    assert type(caught.value.__cause__).__module__.startswith("redis")
    with pytest.raises(LayerRefused, match="WRONGTYPE"):
        await server.execute(("LPUSH", key, "x"))


@pytest.fixture(params=["redis", "cluster", "local"])
async def lost_layer(
    request: pytest.FixtureRequest, redis_factory: Callable[..., RedisProcess]
) -> AsyncIterator[tuple[Any, Callable[[], None]]]:
    """(a layer of the parametrised kind on private servers, stop its servers)."""
    layer: Any
    if request.param == "redis":
        server = redis_factory()
        layer = RedisChannelLayer(hosts=[server.url])
        stop = server.stop
    elif request.param == "local":
        central, local = redis_factory(), redis_factory(unix_socket=True)
        layer = RedisLocalChannelLayer(hosts=[central.url], local_hosts=[local.unix_url])

        def stop() -> None:
            central.stop()
            local.stop()

    else:
        cluster = RedisClusterProcess(masters=1).start()
        request.addfinalizer(cluster.close)
        layer = RedisChannelLayer(hosts=[cluster.url])
        assert isinstance(layer.placement, ClusterPlacement)
        stop = cluster.close
    yield layer, stop
    await layer.close()


async def test_lost_server_raises_layer_unavailable(
    lost_layer: tuple[Any, Callable[[], None]],
) -> None:
    """Every call that needs the server fails with ``LayerUnavailable`` once it is gone, and
    redis-py's error is its cause."""
    layer, stop = lost_layer
    await layer.send("test.before", {"n": 1})
    inbox = await layer.new_channel()
    await layer.group_add("test.group", inbox)
    stop()
    calls = {
        "send": lambda: layer.send("test.after", {"n": 2}),
        "send to a process channel": lambda: layer.send(inbox, {"n": 2}),
        "group_add": lambda: layer.group_add("test.group", "test.after"),
        "group_discard": lambda: layer.group_discard("test.group", inbox),
        "group_send": lambda: layer.group_send("test.group", {"n": 3}),
        "flush": layer.flush,
    }
    for name, call in calls.items():
        with pytest.raises(LayerUnavailable) as caught:
            await asyncio.wait_for(call(), 20)
        assert caught.value.__cause__ is not None, name


async def test_server_out_of_memory_raises_layer_refused(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    """A server over its ``maxmemory`` refuses writes: ``LayerRefused`` saying so, from ``send``
    and ``group_add``."""
    layer = RedisChannelLayer(hosts=[redis_factory().url])
    try:
        (server,) = await layer.servers()
        await server.execute(("CONFIG", "SET", "maxmemory", "1"))
        with pytest.raises(LayerRefused, match=r"^OutOfMemoryError: .*'maxmemory'"):
            await layer.send("test.oom", {"n": 1})
        with pytest.raises(LayerRefused, match="maxmemory"):
            await layer.group_add("test.group", "test.oom")
    finally:
        await layer.close()


# -- claim: who decides a gateway connection (core/claims.py) ------------------------------------


async def test_claim_is_won_once_and_names_its_holder_to_the_others(
    make_layer: LayerFactory,
) -> None:
    edge, node = make_layer(), make_layer()
    channel = await edge.new_channel("edge")
    other = await edge.new_channel("edge")
    results = await asyncio.gather(*(node.claim(channel, f"n{i}", 30) for i in range(5)))
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert [r for r in results if r is not None] == [f"n{winners[0]}"] * 4
    assert await edge.claim(channel, "edge", 30) == f"n{winners[0]}"
    assert await edge.claim(other, "edge", 30) is None  # one claim per channel


async def test_a_claim_expires_after_its_ttl(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel("edge")
    assert await layer.claim(channel, "first", 0.05) is None
    await asyncio.sleep(0.2)
    assert await layer.claim(channel, "second", 30) is None
    assert await layer.claim(channel, "third", 30) == "second"


async def test_claim_refuses_a_normal_channel(make_layer: LayerFactory) -> None:
    with pytest.raises(ValueError, match="process-specific"):
        await make_layer().claim("route.channel", "edge", 30)


async def test_holder_reads_a_claim_without_taking_it(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel("edge")
    assert await layer.holder(channel) is None
    assert await layer.holder(channel) is None  # looking took nothing
    assert await layer.claim(channel, "node 1", 30) is None
    assert await layer.holder(channel) == "node 1"
