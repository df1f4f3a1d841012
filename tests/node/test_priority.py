"""Priorities between keys: with both keys backlogged on a Node of concurrency 1, the first
key's connections are all taken before the second's, but for the second key's share.

Real processes: a uvicorn edge, a Node with ``priority=True`` and HTTP clients. One request
holds the Node while the others queue in Redis (the low key's first); the app records the
order it ran them in (traffic_app.py).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from distributed_asgi.core.types import Message
from distributed_asgi.layers import InMemoryChannelLayer
from distributed_asgi.node.intake import PROBE_AFTER, PriorityIntake, Traffic, new_intake
from distributed_asgi.ops.status import render
from tests.gateway.cli_processes import CliProcesses
from tests.gateway.fixtures import Gateway
from tests.node.traffic_app import events
from tests.ops.test_status import status

TRAFFIC_APP = "tests.node.traffic_app:app"
ROUTES = [["^/high/", "high"], ["^/low/", "low"]]
WAITING = 6  # requests queued on each key


def _served_order(gateway: Gateway, tmp_path: Path, **options: Any) -> list[str]:
    """The keys of the requests in the order the app ran them: one holding the Node, then
    WAITING low and WAITING high ones queued behind it."""
    gateway.start_edge(routes=ROUTES, pickup_timeout=30)
    gateway.start_node(
        app=TRAFFIC_APP,
        keys=["high", "low"],
        max_applications=1,
        priority=True,
        lifespan="off",
        **options,
    )
    time.sleep(10 * PROBE_AFTER)  # both keys are seen empty: the Node is idle
    statuses: list[int] = []

    def get(path: str) -> None:
        statuses.append(httpx.get(gateway.url(path), timeout=60).status_code)

    holder = threading.Thread(target=get, args=("/high/h0?seconds=1.5",))
    holder.start()
    deadline = time.monotonic() + 20
    while not events(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    threads = [
        threading.Thread(target=get, args=(f"/{key}/{key[0]}{n}?seconds=0.05",))
        for key in ("low", "high")
        for n in range(1, WAITING + 1)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in [holder, *threads]:
        thread.join(60)
    assert statuses == [200] * (2 * WAITING + 1), gateway.logs()
    return [line[1] for line in events(tmp_path) if line[0] == "start"]


def test_the_first_key_is_served_before_the_second(gateway: Gateway, tmp_path: Path) -> None:
    # The default share (one in 10) is more than the 7 high requests: no low one before them.
    order = _served_order(gateway, tmp_path)
    assert order == ["high"] * (WAITING + 1) + ["low"] * WAITING, order


@pytest.mark.parametrize("share", [2, 3])
def test_the_second_key_keeps_its_share(gateway: Gateway, tmp_path: Path, share: int) -> None:
    """Passed over for share - 1 connections, the low key takes the next one; once the high
    key's queue is empty, the low key has the Node."""
    order = _served_order(gateway, tmp_path, priority_share=share)
    expected = ["high"]  # the request that held the Node, taken while both keys were idle
    highs, lows = WAITING, WAITING
    while highs:
        run = min(share - 1, highs)
        expected += ["high"] * run
        highs -= run
        if run == share - 1:
            expected.append("low")
            lows -= 1
    expected += ["low"] * lows
    assert order == expected, order


def test_an_idle_node_keeps_no_timer_and_the_room_left_goes_to_the_later_key() -> None:
    """In one process, on the in-memory layer: idle, a Node with priority listens on every key
    and schedules nothing; a connection on the first key does not keep the later key from
    the room that key leaves."""

    async def scenario() -> None:
        layer = InMemoryChannelLayer()
        running: list[str] = []

        def take(key: str, message: Message) -> None:
            running.append(key)
            intake.started(key)

        intake = new_intake(
            layer, ["high", "low"], lambda: 4 - len(running), take, Traffic(priority=True)
        )
        assert isinstance(intake, PriorityIntake)
        intake.fill()
        await asyncio.sleep(10 * PROBE_AFTER)  # both keys seen empty
        assert intake._timer is None  # an idle Node is woken by nothing but its receives
        # Every key listened on, the room kept out: whichever key becomes the preferred one
        # takes the room from the keys after it.
        assert min(intake._receiving.values()) >= 1 and len(intake._receives) == 4
        await layer.send("high", {"n": 0})
        await asyncio.sleep(0.01)
        for n in range(6):
            await layer.send("low", {"n": n})
        await asyncio.sleep(10 * PROBE_AFTER)
        # The high connection runs; once high is seen empty again the low key has the rest
        # of the room, and the full Node holds no receive.
        assert running == ["high", "low", "low", "low"]
        assert not intake._receives
        intake.cancel()
        await layer.close()

    asyncio.run(scenario())


def test_the_worker_command_takes_priority_and_status_shows_it(
    gateway: Gateway, tmp_path: Path
) -> None:
    cli = CliProcesses(tmp_path)
    cli.start(
        "worker",
        [
            *("worker", TRAFFIC_APP, "--key", "high", "--key", "low:2", "--lifespan", "off"),
            *("--priority", "--priority-share", "3"),
            *("--redis", gateway.redis_url, "--prefix", gateway.prefix),
        ],
    )
    try:
        cli.wait_for("worker", lambda text: "Node listening" in text)
        snapshot = status(gateway)
    finally:
        cli.stop()
    (node,) = snapshot["nodes"]
    assert (node["keys"], node["limits"]) == (["high", "low"], {"low": 2})
    assert (node["priority"], node["priority_share"]) == (True, 3)
    console = Console(file=io.StringIO(), width=200)
    console.print(render(snapshot))
    assert "high > low 0/2" in console.file.getvalue()  # type: ignore[attr-defined]
