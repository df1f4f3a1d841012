"""How a Node takes connects: a whole backlog in one round, and no key starved by another.

The connects are put on the route channels before the Node starts (as a burst leaves them),
and the app holds every connection, so what ran is what the Node took.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from urllib.parse import urlsplit

from distributed_asgi.core.frames import Connect, encode
from distributed_asgi.layers import RedisChannelLayer
from tests.gateway.fixtures import Gateway

CONTRACT_APP = "tests.gateway.apps.contract:app"


async def _queue_connects(
    gateway: Gateway, key: str, names: list[str], seconds: float = 30
) -> None:
    """A connect per name for the contract app's ``/hold/NAME``, held ``seconds``."""
    layer = RedisChannelLayer(hosts=[gateway.redis_url], prefix=gateway.prefix)
    reply = await layer.new_channel("edge")  # nobody reads it: the frames expire there
    for name in names:
        scope = {
            "type": "http",
            "method": "GET",
            "path": f"/hold/{name}",
            "query_string": f"seconds={seconds}".encode(),
            "headers": [],
        }
        await layer.send(key, encode(Connect(name, scope, reply, time.time() + 60, 60.0)))
    await layer.close()


def _ran(gateway: Gateway, names: list[str]) -> int:
    return sum(gateway.marker(f"ran-{name}").exists() for name in names)


def _wait_ran(gateway: Gateway, names: list[str], count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _ran(gateway, names) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ran(gateway, names) == count, gateway.logs()


class Monitor:
    """Redis MONITOR on a raw socket: every command the server runs, as text lines."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        assert parts.port is not None, redis_url
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[str] = []
        self._buffer = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self._buffer += chunk
                *lines, self._buffer = self._buffer.split(b"\r\n")
                self.lines.extend(line.decode(errors="replace") for line in lines)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


def _pops(monitor: Monitor, gateway: Gateway, key: str) -> list[int]:
    """The count of every ``LPOP`` on ``key``'s queue: the connects each round asked for."""
    queue = f'"{gateway.prefix}:q:{key}"'
    lines = [line for line in monitor.lines if '"LPOP"' in line and queue in line]
    return [int(line.rsplit(" ", 1)[-1].strip('"')) for line in lines]


def test_an_idle_node_takes_a_whole_backlog_in_one_round(gateway: Gateway) -> None:
    names = [f"b{i}" for i in range(40)]
    asyncio.run(_queue_connects(gateway, "burst", names))
    monitor = Monitor(gateway.redis_url)
    try:
        gateway.start_node(
            app=CONTRACT_APP, keys=["burst"], max_applications=40, drain_timeout=0, lifespan="off"
        )
        _wait_ran(gateway, names, 40)
    finally:
        monitor.close()
    # The first round asks for the Node's whole room, and so gets every connect waiting.
    pops = _pops(monitor, gateway, "burst")
    assert pops and pops[0] == 40, pops


def test_a_busy_key_takes_the_receives_an_idle_key_holds(gateway: Gateway) -> None:
    """Idle, the Node splits its room between its keys; once one key takes connects and the
    room is used up, the idle key's receives beyond one move to it."""
    busy = [f"busy{i}" for i in range(40)]
    asyncio.run(_queue_connects(gateway, "busy", busy))
    monitor = Monitor(gateway.redis_url)
    try:
        gateway.start_node(
            app=CONTRACT_APP,
            keys=["busy", "quiet"],
            max_applications=40,
            drain_timeout=0,
            lifespan="off",
        )
        _wait_ran(gateway, busy, 40)
    finally:
        monitor.close()
    pops = _pops(monitor, gateway, "busy")
    assert pops[0] == 20, pops  # half the room each, while neither key had taken anything
    # Then the rest in a round or three (a fixed share per key would need many rounds).
    assert len([count for count in pops if count]) <= 4, pops


def test_a_quiet_key_is_served_while_a_busy_key_has_a_backlog(gateway: Gateway) -> None:
    """Fairness: a full Node gives every key a receive whenever a connection ends."""
    busy = [f"busy{i}" for i in range(90)]
    asyncio.run(_queue_connects(gateway, "busy", busy, seconds=0.3))
    gateway.start_node(
        app=CONTRACT_APP,
        keys=["busy", "quiet"],
        max_applications=10,
        drain_timeout=0,
        lifespan="off",
    )
    _wait_ran(gateway, busy, 10, timeout=20)
    asyncio.run(_queue_connects(gateway, "quiet", ["quiet0"]))
    _wait_ran(gateway, ["quiet0"], 1, timeout=20)
    # The busy key's backlog (about 2.7 s of work at 10 at a time) was not drained first.
    assert _ran(gateway, busy) < 80
