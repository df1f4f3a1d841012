"""Faults against real processes: Nodes killed or rolled, Redis stopped under load, out of
memory, or paused by ``CLIENT PAUSE``.

Each test prints its figures (time to 502, failures, outage length) for the closing notes; run
with ``-s`` to see them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from distributed_asgi.ops.redis_process import RedisProcess
from tests.gateway.fixtures import Gateway
from tests.gateway.load import Outcome, SteadyLoad


def test_killed_node_gives_502_and_queued_requests_go_to_another_node(gateway: Gateway) -> None:
    gateway.start_edge(pickup_timeout=15, retries=0)  # with retries: test_retries.py
    doomed, _ = gateway.start_node(heartbeat_interval=0.5, max_applications=1)
    results: dict[str, httpx.Response] = {}

    def get(name: str, path: str) -> None:
        results[name] = httpx.get(gateway.url(path), timeout=30)

    busy = threading.Thread(target=get, args=("busy", "/pid?sleep=60&marker=busy"))
    busy.start()
    gateway.wait_marker("busy")
    # The doomed Node is full: these wait in Redis, taken by nobody yet.
    queued = [threading.Thread(target=get, args=(f"q{i}", "/pid")) for i in range(3)]
    for thread in queued:
        thread.start()
    time.sleep(0.5)
    killed_at = time.monotonic()
    os.kill(doomed.pid, signal.SIGKILL)
    survivor, _ = gateway.start_node()
    busy.join()
    time_to_502 = time.monotonic() - killed_at
    for thread in queued:
        thread.join()
    print(f"\nNode SIGKILLed mid-request: 502 after {time_to_502:.2f}s")
    assert results["busy"].status_code == 502
    assert time_to_502 < 10
    for i in range(3):
        assert results[f"q{i}"].status_code == 200
        assert results[f"q{i}"].json()["pid"] == survivor.pid


def test_rolling_restart_under_load_fails_no_request(gateway: Gateway) -> None:
    gateway.start_edge()
    nodes = [gateway.start_node()[0] for _ in range(2)]
    with SteadyLoad(gateway.url("/pid?sleep=0.02"), clients=4) as load:
        load.wait_for(50)
        for _ in range(4):
            nodes.append(gateway.start_node()[0])
            old = nodes.pop(0)
            old.send_signal(signal.SIGTERM)
            assert old.wait(30) == 0
            load.wait_for(30)
    outcomes = load.summary()
    print(f"\nrolling restart of 4 Nodes under load: {dict(outcomes)}")
    assert set(outcomes) == {200}, f"{outcomes}\n{gateway.logs()[-6000:]}"


def test_redis_outage_under_load_fails_fast_and_recovers(
    redis_factory: Callable[..., RedisProcess], prefix: str, tmp_path: Path
) -> None:
    server = redis_factory()
    gateway = Gateway(server.url, prefix, tmp_path)
    pickup = 2.0
    try:
        gateway.start_edge(pickup_timeout=pickup)
        gateway.start_node()
        with SteadyLoad(gateway.url("/hello"), clients=4, timeout=60) as load:
            load.wait_for(50)
            server.stop()
            down_at = time.monotonic()
            time.sleep(3)
            server.start()
            up_at = time.monotonic()
            # Both sides reconnect by themselves: wait until requests succeed again, then
            # require that a stretch of load is all successes.
            deadline = time.monotonic() + 30
            while load.summary(since=time.monotonic() - 0.5).get(200, 0) == 0:
                assert time.monotonic() < deadline, f"no recovery: {load.summary()}"
                time.sleep(0.1)
            recovered_at = time.monotonic()
            time.sleep(2)
            tail = load.summary(since=time.monotonic() - 1.5)
        during = load.summary(since=down_at)
        print(
            f"\nRedis down {up_at - down_at:.1f}s under load: served again "
            f"{recovered_at - up_at:.2f}s after restart; outcomes from the stop on: "
            f"{dict(during)}; slowest request {load.slowest():.2f}s"
        )
        assert set(tail) == {200}, tail
        assert set(during) <= {200, 503}, during  # never a 500, never a client-side error
        # No request hangs: at most the pickup wait plus one retry window of the layer.
        assert load.slowest() < pickup + 6
        logs = gateway.logs()
        assert "unreachable" in logs
        assert "reachable again after" in logs
    finally:
        gateway.stop()


def test_a_full_node_hands_back_every_connection_it_popped(gateway: Gateway) -> None:
    """One Redis round can complete several receives at once; when the first fills the Node,
    the others must go back to the route channel, not vanish (then the client got 503)."""
    gateway.start_edge(pickup_timeout=8)
    gateway.start_node(max_applications=2)
    results: list[int] = []

    def get() -> None:
        results.append(httpx.get(gateway.url("/pid?sleep=0.3"), timeout=30).status_code)

    for _ in range(3):
        threads = [threading.Thread(target=get) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * 24


def _served_again(gateway: Gateway, timeout: float = 30.0) -> float:
    """Seconds until a request gets 200 again, trying one request after another."""
    started = time.monotonic()
    while httpx.get(gateway.url("/hello"), timeout=30).status_code != 200:
        assert time.monotonic() - started < timeout, f"not served again:\n{gateway.logs()}"
        time.sleep(0.1)
    return time.monotonic() - started


def test_redis_out_of_memory_gives_503_naming_the_cause_and_serving_resumes(
    redis_factory: Callable[..., RedisProcess], prefix: str, tmp_path: Path
) -> None:
    import redis

    server = redis_factory(args=["--maxmemory-policy", "noeviction"])
    admin = redis.Redis.from_url(server.url)
    gateway = Gateway(server.url, prefix, tmp_path)
    try:
        gateway.start_edge(pickup_timeout=2.0)
        gateway.start_node()
        assert httpx.get(gateway.url("/hello"), timeout=30).status_code == 200
        admin.config_set("maxmemory", "1")  # below what Redis uses: every write is refused
        started = time.monotonic()
        responses = [httpx.get(gateway.url("/hello"), timeout=30) for _ in range(3)]
        elapsed = time.monotonic() - started
        admin.config_set("maxmemory", "0")
        freed_at = time.monotonic()
        recovery = _served_again(gateway)
        after = [httpx.get(gateway.url("/hello"), timeout=30).status_code for _ in range(20)]
        print(
            f"\nRedis out of memory: {[r.status_code for r in responses]} in {elapsed:.2f}s "
            f"for 3 requests; served again {recovery:.2f}s after memory was freed"
        )
        assert [r.status_code for r in responses] == [503] * 3
        assert all(r.headers.get("retry-after") for r in responses)
        assert elapsed < 3 * 2.0  # refused at once, not after a pickup wait each
        edge_log = gateway.processes[0][1].read_text()
        # redis-py keeps Redis's text without its "OOM" error code.
        assert "used memory > 'maxmemory'" in edge_log, edge_log
        assert after == [200] * 20, gateway.logs()
        assert time.monotonic() - freed_at < 30
    finally:
        admin.close()
        gateway.stop()


class _ProbeRequest:
    """One GET in a thread of its own, started at once."""

    def __init__(self, url: str) -> None:
        self.started = time.monotonic()
        self._result: list[Outcome] = []
        self._thread = threading.Thread(target=self._get, args=(url,))
        self._thread.start()

    def _get(self, url: str) -> None:
        result: int | str
        try:
            result = httpx.get(url, timeout=30).status_code
        except httpx.HTTPError as exc:
            result = type(exc).__name__
        self._result.append(Outcome(self.started, time.monotonic() - self.started, result))

    def outcome(self) -> Outcome:
        self._thread.join()
        return self._result[0]


@dataclass(frozen=True)
class PauseRun:
    during: Counter[int | str]  # outcomes of the requests the pause met
    tail: Counter[int | str]  # outcomes of the last second, well after the pause
    outcomes: list[Outcome]  # the requests the pause met (in flight or started since)
    recovery: float  # seconds from the pause's end to the next 200


def _load_through_pause(
    redis_factory: Callable[..., RedisProcess],
    prefix: str,
    workdir: Path,
    *,
    pickup: float,
    pause: float,
) -> PauseRun:
    """Steady load on an edge and a Node while Redis runs ``CLIENT PAUSE pause ALL``."""
    import redis

    server = redis_factory()
    admin = redis.Redis.from_url(server.url)
    gateway = Gateway(server.url, prefix, workdir)
    try:
        gateway.start_edge(pickup_timeout=pickup)
        gateway.start_node()
        with SteadyLoad(gateway.url("/hello"), clients=4, timeout=60) as load:
            load.wait_for(50)
            admin.client_pause(int(pause * 1000), all=True)
            paused_at = time.monotonic()
            # New requests in the middle of the pause, besides the load's (which may all be
            # waiting for answers of requests a Node had taken before the pause).
            time.sleep(0.5)
            probes = [_ProbeRequest(gateway.url("/hello")) for _ in range(3)]
            time.sleep(max(0.0, paused_at + pause - time.monotonic()))
            recovery = _served_again(gateway)
            load.wait_for(50)
            tail = load.summary(since=time.monotonic() - 1.0)
        # Every request the pause met: those in flight when it began, and those started since.
        met = [o for o in load.outcomes if o.started + o.seconds >= paused_at]
        met += [probe.outcome() for probe in probes]
        run = PauseRun(
            during=Counter(o.result for o in met), tail=tail, outcomes=met, recovery=recovery
        )
        slowest = max(o.seconds for o in run.outcomes)
        slowest_503 = max((o.seconds for o in run.outcomes if o.result == 503), default=0.0)
        print(
            f"\nCLIENT PAUSE {pause:.0f}s ALL under load (pickup timeout {pickup:.0f}s): outcomes "
            f"of the requests it met {dict(run.during)}; slowest request {slowest:.2f}s, "
            f"slowest 503 {slowest_503:.2f}s; "
            f"served {recovery:.2f}s after the pause ended"
        )
        return run
    finally:
        admin.close()
        gateway.stop()


def test_client_pause_hangs_no_request(
    redis_factory: Callable[..., RedisProcess], prefix: str, tmp_path: Path
) -> None:
    pickup, pause = 2.0, 2.0
    run = _load_through_pause(redis_factory, prefix, tmp_path, pickup=pickup, pause=pause)
    assert set(run.during) <= {200, 503}, run.during
    assert set(run.tail) == {200}, run.tail
    # Nothing waits longer than the pause plus a pickup timeout (and a loaded machine).
    assert max(o.seconds for o in run.outcomes) < pause + pickup + 2.0


def test_client_pause_answers_503_within_the_pickup_budget(
    redis_factory: Callable[..., RedisProcess], prefix: str, tmp_path: Path
) -> None:
    """A 503 comes within pickup_timeout + 1 s of the request, however long Redis is paused;
    requests that a Node had taken finish once the pause ends."""
    pickup, pause = 1.0, 3.0
    run = _load_through_pause(redis_factory, prefix, tmp_path, pickup=pickup, pause=pause)
    assert set(run.during) <= {200, 503}, run.during
    assert set(run.tail) == {200}, run.tail
    refused = [o.seconds for o in run.outcomes if o.result == 503]
    assert refused, "no request fell in the pause"
    # The contract's pickup + 1 s, and half a second for the burst of work as the pause ends
    # on a loaded machine.
    assert max(refused) <= pickup + 1.5, refused
    assert max(o.seconds for o in run.outcomes) <= pause + 1.5
