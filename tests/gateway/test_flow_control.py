"""Flow control: a slow client or a slow application holds memory, in the edge, the Node and
Redis, to a bound that does not grow with the size of the body (issue 4).

Each test moves a body of 160 MiB through the gateway while one side stalls for a few seconds,
and samples the other parts' memory meanwhile: without flow control the whole body would pile
up somewhere; with it, growth stays at the channels' capacity x frame size (a few MiB).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

from tests.gateway.fixtures import Gateway

BODY_MB = 160
GROWTH_LIMIT = 48 * 1024 * 1024  # well under BODY_MB: what "bounded" means here


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def redis_memory(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.info("memory")["used_memory"])


class Sampler:
    """The largest growth of edge RSS, Node RSS and Redis memory over a baseline."""

    def __init__(self, gateway: Gateway, edge: int, node: int) -> None:
        self.gateway, self.pids = gateway, {"edge": edge, "node": node}
        self.base = self._now()
        self.peak = dict.fromkeys(self.base, 0)

    def _now(self) -> dict[str, int]:
        now = {name: rss(pid) for name, pid in self.pids.items()}
        now["redis"] = redis_memory(self.gateway.redis_url)
        return now

    def sample_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, value in self._now().items():
                self.peak[name] = max(self.peak[name], value - self.base[name])
            time.sleep(0.1)

    def report(self, what: str) -> str:
        mib = {name: f"{value / 2**20:.1f} MiB" for name, value in self.peak.items()}
        return f"{what}: peak growth {mib}"


def test_slow_client_download_keeps_memory_bounded(gateway: Gateway) -> None:
    edge = gateway.start_edge()
    node, _ = gateway.start_node()
    sampler = Sampler(gateway, edge.pid, node.pid)
    with httpx.stream("GET", gateway.url(f"/big?mb={BODY_MB}&marker=dl"), timeout=60) as response:
        stream = response.iter_bytes()
        received = len(next(stream))
        # The client stops reading: the app must be held back, not the body buffered.
        sampler.sample_for(4)
        sent_while_stalled = int(gateway.wait_marker("sent-dl"))
        for chunk in stream:
            received += len(chunk)
    print("\n" + sampler.report(f"{BODY_MB} MiB download, client stalled 4 s"))
    print(f"the app had sent {sent_while_stalled / 2**20:.0f} MiB when the client resumed")
    assert received == BODY_MB * 2**20
    assert sent_while_stalled < BODY_MB * 2**20 / 2
    for name, growth in sampler.peak.items():
        assert growth < GROWTH_LIMIT, sampler.report(name)


def test_slow_application_upload_keeps_memory_bounded(gateway: Gateway) -> None:
    edge = gateway.start_edge(max_body_size=(BODY_MB + 1) * 2**20)
    node, _ = gateway.start_node()
    sampler = Sampler(gateway, edge.pid, node.pid)
    uploaded = threading.Event()
    result: dict[str, httpx.Response] = {}

    def body() -> Iterator[bytes]:
        chunk = b"u" * 65536
        for _ in range(BODY_MB * 16):
            yield chunk
        uploaded.set()

    def upload() -> None:
        result["r"] = httpx.post(
            gateway.url("/slow-upload?pause=4&marker=ul"), content=body(), timeout=60
        )

    thread = threading.Thread(target=upload)
    thread.start()
    gateway.wait_marker("ul")
    sampler.sample_for(3.5)
    stalled_client_done = uploaded.is_set()
    thread.join()
    print("\n" + sampler.report(f"{BODY_MB} MiB upload, application paused 4 s"))
    assert result["r"].json() == {"length": BODY_MB * 2**20}
    assert not stalled_client_done  # the client was held back while the app paused
    for name, growth in sampler.peak.items():
        assert growth < GROWTH_LIMIT, sampler.report(name)
