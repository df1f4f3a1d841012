"""Per-key limits on a Node: a limited key runs at most its limit at once, and its work beyond
stays in Redis, while the Node's other keys are served meanwhile.

The main test runs the real command (``worker --key site --key reports:4``) behind a uvicorn
edge, with real HTTP clients; the app itself counts what runs at once (traffic_app.py).
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner
from rich.console import Console

from distributed_asgi import Node
from distributed_asgi.core.types import Message
from distributed_asgi.layers import InMemoryChannelLayer
from distributed_asgi.node.intake import Traffic, new_intake
from distributed_asgi.ops.cli.main import main
from distributed_asgi.ops.status import render
from tests.gateway.cli_processes import CliProcesses
from tests.gateway.fixtures import Gateway
from tests.node.test_intake import CONTRACT_APP, Monitor, _pops, _queue_connects, _ran, _wait_ran
from tests.node.traffic_app import events
from tests.ops.test_status import status

TRAFFIC_APP = "tests.node.traffic_app:app"
HOLD = 1.5  # seconds each report takes


async def _app(scope: object, receive: object, send: object) -> None:
    pass


def _starts(directory: Path, group: str) -> list[list[str]]:
    return [line for line in events(directory) if line[0] == "start" and line[1] == group]


def _reports_when_site_started(directory: Path) -> list[tuple[int, int]]:
    """For each site request, the reports running and still to start when it started."""
    lines = events(directory)
    total = sum(1 for line in lines if line[:2] == ["start", "reports"])
    running = started = 0
    seen = []
    for line in lines:
        if line[1] == "reports":
            running += 1 if line[0] == "start" else -1
            started += line[0] == "start"
        elif line[0] == "start":
            seen.append((running, total - started))
    return seen


def test_a_limited_key_runs_at_most_its_limit_while_the_others_are_served(
    gateway: Gateway, tmp_path: Path
) -> None:
    gateway.start_edge(routes=[["^/reports/", "reports"], ["^/site/", "site"]], pickup_timeout=30)
    cli = CliProcesses(tmp_path)
    cli.start(
        "worker",
        [
            *("worker", TRAFFIC_APP, "--key", "site", "--key", "reports:4", "--lifespan", "off"),
            *("--redis", gateway.redis_url, "--prefix", gateway.prefix),
        ],
    )
    try:
        cli.wait_for("worker", lambda text: "Node listening" in text)
        reports: list[int] = []

        def report(number: int) -> None:
            response = httpx.get(gateway.url(f"/reports/r{number}?seconds={HOLD}"), timeout=60)
            reports.append(response.status_code)

        threads = [threading.Thread(target=report, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(_starts(tmp_path, "reports")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Four reports run and sixteen wait in Redis: site requests do not wait for them.
        site_seconds = []
        for number in range(5):
            started = time.monotonic()
            response = httpx.get(gateway.url(f"/site/s{number}"), timeout=30)
            site_seconds.append(time.monotonic() - started)
            assert response.status_code == 200

        snapshot = status(gateway)
        deadline = time.monotonic() + 10
        while snapshot["nodes"][0]["in_use"]["reports"] != 4 and time.monotonic() < deadline:
            snapshot = status(gateway)
        for thread in threads:
            thread.join(60)
    finally:
        cli.stop()

    assert reports == [200] * 20
    running = [int(line[3]) for line in _starts(tmp_path, "reports")]
    assert len(running) == 20
    assert max(running) == 4, running  # the limit, reached and never passed
    # Every site request ran while reports ran and more of them waited for the limit...
    for reports_running, reports_waiting in _reports_when_site_started(tmp_path):
        assert reports_running > 0 and reports_waiting > 0, events(tmp_path)
    # ... and none waited for a report to end (that takes HOLD seconds).
    assert sorted(site_seconds)[2] < HOLD / 3, site_seconds

    (node,) = snapshot["nodes"]
    assert node["limits"] == {"reports": 4}
    assert node["in_use"] == {"site": 0, "reports": 4}
    assert node["priority"] is False
    console = Console(file=io.StringIO(), width=200)
    console.print(render(snapshot))
    assert "site, reports 4/4" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_limited_key_never_pops_more_than_its_limit(gateway: Gateway) -> None:
    """The capacity contract per key: the limit is kept out as receives, so no round asks
    Redis for more than the key's remaining limit, and the rest stays queued."""
    names = [f"r{i}" for i in range(10)]
    asyncio.run(_queue_connects(gateway, "reports", names))
    monitor = Monitor(gateway.redis_url)
    try:
        gateway.start_node(
            app=CONTRACT_APP,
            keys=["site", "reports"],
            limits={"reports": 3},
            max_applications=40,
            drain_timeout=0,
            lifespan="off",
        )
        _wait_ran(gateway, names, 3)
        time.sleep(1.0)  # time for any round beyond the limit to show
    finally:
        monitor.close()
    assert _ran(gateway, names) == 3
    pops = _pops(monitor, gateway, "reports")
    assert pops and max(pops) <= 3 and sum(pops) >= 3, pops
    client = redis.Redis.from_url(gateway.redis_url)
    assert client.llen(f"{gateway.prefix}:q:reports") == 7  # still in Redis, for other Nodes


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"reports": 0}, "limit of key 'reports' must be a whole number >= 1, got 0"),
        ({"reports": -2}, "limit of key 'reports' must be a whole number >= 1, got -2"),
        ({"reports": "4"}, "limit of key 'reports' must be a whole number >= 1, got '4'"),
        ({"reports": True}, "limit of key 'reports' must be a whole number >= 1, got True"),
        ({"other": 2}, "'other' is not one of this Node's keys"),
        (["reports"], "limits must be a mapping"),
    ],
)
def test_a_bad_limit_is_refused_naming_the_key(limits: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Node(app=_app, keys=["site", "reports"], limits=limits)


def test_bad_priority_options_are_refused() -> None:
    with pytest.raises(ValueError, match="priority_share must be a whole number >= 2, got 1"):
        Node(app=_app, keys=["a", "b"], priority=True, priority_share=1)
    with pytest.raises(ValueError, match="priority must be True or False, got 'yes'"):
        Node(app=_app, keys=["a", "b"], priority="yes")  # type: ignore[arg-type]
    # The seed's forms are unchanged.
    assert Node(app=_app, key="a", keys=["b"]).keys == ["a", "b"]
    assert Node(app=_app, key="a", limits={"a": 2}).intake.limits == {"a": 2}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("reports:0", "Error: invalid limit '0' for key 'reports': expected a whole number >= 1"),
        ("reports:-1", "Error: invalid limit '-1' for key 'reports'"),
        ("reports:four", "Error: invalid limit 'four' for key 'reports'"),
        ("reports:", "Error: invalid limit '' for key 'reports'"),
        ("a!b:2", "Error: invalid key 'a!b'"),
    ],
)
def test_a_bad_limit_on_the_command_line_names_the_key(key: str, message: str) -> None:
    result = CliRunner().invoke(main, ["worker", "json:dumps", "--key", "site", "--key", key])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith(message), result.output


def test_a_key_given_two_limits_and_a_bad_share_are_refused() -> None:
    result = CliRunner().invoke(
        main, ["worker", "json:dumps", "--key", "reports:2", "--key", "reports:3"]
    )
    assert result.exit_code == 1
    assert "Error: key 'reports' is given twice with different limits" in result.output
    result = CliRunner().invoke(
        main, ["worker", "json:dumps", "--key", "a", "--priority", "--priority-share", "1"]
    )
    assert result.exit_code == 2  # as every out-of-range number (--concurrency 0)
    assert "Invalid value for '--priority-share'" in result.output


@pytest.mark.parametrize("seed", [13, 14, 17])
@pytest.mark.parametrize("priority", [False, True], ids=["plain", "priority"])
def test_receives_plus_running_never_pass_a_limit(priority: bool, seed: int) -> None:
    """In one process, on the in-memory layer: connections on two keys start and end at
    random; after every step a limited key's receives and running connections are within its
    limit, every connection is taken once, and none is ever popped beyond the limit (a receive
    that finished is never cancelled to make room: its connect would be taken beyond it).

    The Node's room is kept the same way, but with more keys than room, each key keeps one
    receive: two may finish at once for the last slot, and the Node hands one back (here
    too, by sending it again)."""

    async def scenario() -> None:
        rng = random.Random(seed)
        layer = InMemoryChannelLayer(capacity=1000)
        running: list[str] = []
        taken: list[int] = []
        all_taken = asyncio.Event()
        beyond_limit = 0
        handed_back: set[asyncio.Task[None]] = set()

        def check() -> None:
            assert intake._receiving["reports"] + intake.running["reports"] <= 3

        def end(key: str) -> None:
            running.remove(key)
            intake.ended(key)
            check()

        def take(key: str, message: Message) -> None:
            nonlocal beyond_limit
            if not intake.has_room(key):
                beyond_limit += 1
                return
            if len(running) >= 8:  # as the Node does
                task = asyncio.ensure_future(layer.send(key, message))
                handed_back.add(task)
                task.add_done_callback(handed_back.discard)
                return
            running.append(key)
            intake.started(key)
            taken.append(int(message["n"]))
            if len(taken) == 300:
                all_taken.set()
            asyncio.get_running_loop().call_later(rng.random() / 50, end, key)
            check()

        intake = new_intake(
            layer,
            ["site", "reports"],
            lambda: 8 - len(running),
            take,
            Traffic(limits={"reports": 3}, priority=priority),
        )
        intake.fill()
        for n in range(300):
            await layer.send(rng.choice(["site", "reports"]), {"n": n})
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() / 100)
            check()
        await asyncio.wait_for(all_taken.wait(), 20)
        assert sorted(taken) == list(range(300))
        assert beyond_limit == 0
        intake.cancel()
        await layer.close()

    asyncio.run(scenario())
