"""A burst is not a backlog: route channels hold ``backlog`` connects (1000 by default), not the
layer's per-channel capacity (100, sized for consumer inboxes), so a burst of concurrent
requests waits for idle Nodes instead of being refused; beyond the backlog the edge answers
503 at once (DESIGN.md's failure table).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter

import httpx
import pytest
from click.testing import CliRunner

from distributed_asgi import create_path_distributor
from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.build import DEFAULT_BACKLOG, build_layer
from distributed_asgi.ops.cli.main import main
from tests.gateway.fixtures import Gateway

BURST = 200
ROUNDS = 5


async def burst(url: str, count: int) -> Counter[int | str]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def get() -> int | str:
            try:
                return (await client.get(url)).status_code
            except httpx.HTTPError as exc:
                return type(exc).__name__

        return Counter(await asyncio.gather(*(get() for _ in range(count))))


def test_a_burst_to_two_idle_nodes_is_served_whole_every_time(gateway: Gateway) -> None:
    gateway.start_edge()
    gateway.start_node()
    gateway.start_node()
    rounds = []
    for _ in range(ROUNDS):
        rounds.append(asyncio.run(burst(gateway.url("/hello"), BURST)))
    print(f"\n{ROUNDS} bursts of {BURST} concurrent requests, two Nodes: {rounds}")
    assert rounds == [Counter({200: BURST})] * ROUNDS, gateway.logs()[-4000:]


def test_beyond_the_backlog_the_edge_answers_503_at_once(gateway: Gateway) -> None:
    gateway.start_edge(backlog=2, pickup_timeout=4)  # no Node: the connects stay queued
    statuses: dict[int, int] = {}
    finished: list[int] = []

    def get(index: int) -> None:
        statuses[index] = httpx.get(gateway.url("/hello"), timeout=30).status_code
        finished.append(index)

    waiting = [threading.Thread(target=get, args=(index,)) for index in range(2)]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 10
    while _queued(gateway) < 2:
        assert time.monotonic() < deadline, "the two connects never reached the route channel"
        time.sleep(0.05)
    get(2)  # the third finds the backlog full
    assert statuses[2] == 503
    assert finished == [2]  # answered while the two in the backlog still wait for a Node
    for thread in waiting:
        thread.join()
    assert statuses == {0: 503, 1: 503, 2: 503}  # those two after the pickup timeout


def _queued(gateway: Gateway) -> int:
    import redis

    client = redis.Redis.from_url(gateway.redis_url)
    try:
        return int(client.llen(f"{gateway.prefix}:q:fidelity"))
    finally:
        client.close()


# -- which capacity applies to which channel (pure configuration, no Redis needed) ------------


def _capacity(layer: object, channel: str) -> int:
    assert isinstance(layer, RedisChannelLayer)
    return layer.capacity.for_channel(channel)


def test_route_channels_get_the_backlog_and_process_channels_the_layer_capacity() -> None:
    layer = build_layer(url="redis://localhost:6379/0")
    assert _capacity(layer, "ASGI-testing") == DEFAULT_BACKLOG == 1000
    assert _capacity(layer, "edge.abc!1") == 100  # reply inboxes keep their flow control
    layer = build_layer(url="redis://localhost:6379/0", backlog=5000)
    assert _capacity(layer, "ASGI-testing") == 5000


def test_an_explicit_channel_capacity_wins_over_the_backlog() -> None:
    distributor = create_path_distributor(
        url="redis://localhost:6379/0",
        routes={"/": "site"},
        backlog=5000,
        layer_options={
            "capacity": 7,
            "channel_capacity": {"site": 3, re.compile(r"^api-"): 50},
        },
    )
    assert _capacity(distributor.layer, "site") == 3
    assert _capacity(distributor.layer, "api-users") == 50
    assert _capacity(distributor.layer, "other") == 5000
    assert _capacity(distributor.layer, "edge.x!1") == 7


def test_a_ready_layer_is_used_as_it_is_and_refuses_a_backlog() -> None:
    ready = RedisChannelLayer(hosts=["redis://localhost:6379/0"])
    distributor = create_path_distributor(layer=ready, routes={"/": "site"})
    assert distributor.layer is ready
    assert _capacity(ready, "site") == 100
    with pytest.raises(ValueError, match="backlog applies to a layer built here"):
        create_path_distributor(layer=ready, routes={"/": "site"}, backlog=10)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_a_bad_backlog_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"got {bad!r}")):
        # Deliberately of the wrong type: the check at run time is under test.
        create_path_distributor(url="redis://localhost:6379/0", routes={"/": "x"}, backlog=bad)  # type: ignore[arg-type]


def test_edge_command_backlog_option() -> None:
    (option,) = [p for p in main.commands["edge"].params if p.name == "backlog"]
    assert option.default == DEFAULT_BACKLOG
    result = CliRunner().invoke(main, ["edge", "--route", "/=site", "--backlog", "0"])
    assert result.exit_code != 0
    assert "Invalid value for '--backlog'" in result.output
