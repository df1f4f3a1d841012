"""``make soak`` (``python -m bench.soak [--minutes N]``): steady load for minutes, Nodes rolled.

What it runs: a private Redis server, an edge (``distributed-asgi edge``) and three workers
(``distributed-asgi worker``) serving the hello-world app of ``bench/http.py``. One worker lives
through the whole run; one is replaced every ``--restart-every`` seconds the way a rolling
deploy does it (start the new one, wait until it listens, SIGTERM the old one); one crashes
every ``--kill-every`` seconds (SIGKILL, then a new one is started), half a period after the
restarts. A fixed number of keep-alive client connections send requests back to back, every
tenth one a POST with a body.

What it prints, and checks:

- requests and answers by method and status. A GET whose worker crashed under it is retried on
  another worker by the edge (docs/operations.md, "Retries that are always safe"), so no GET
  may fail, with one exception the contract allows and the summary counts: a GET whose connect
  the crashed worker had popped from Redis but not yet accepted never ran, and is answered 503
  after the pick-up timeout. A POST in flight on the crashed worker is 502 (it may have run);
  any other failure fails the check;
- the RSS of the edge and of the long-lived worker after the warm-up and at the end: it must be
  flat within 10% (a leak per request or per connection shows here long before it hurts);
- the keys left in Redis under the run's prefix once everything has stopped: there must be none
  (every queue and counter expires or is emptied; no key outlives the traffic).

It exits 1 when a check fails. Not part of ``make test``: it takes minutes by design.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import redis

from distributed_asgi.layers.keys import RETRIES
from distributed_asgi.ops.redis_process import RedisProcess, free_port

from .http import APP, BODY
from .report import ROOT

PREFIX = "soak"
RSS_TOLERANCE = 0.10
POST_BODY = b"p" * 16384


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


class Processes:
    """The edge and workers, as users start them; each logs to its own file."""

    def __init__(self, redis_url: str, logs: Path) -> None:
        self.redis_url, self.logs = redis_url, logs
        self.port = free_port()
        self.started: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{name}-{len(self.started)}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "distributed_asgi", *args],
                cwd=ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process, log

    def edge(self) -> subprocess.Popen[bytes]:
        args = ["edge", "--route", "/=hello", "--port", str(self.port), "--no-access-log"]
        process, _ = self._start("edge", [*args, "--redis", self.redis_url, "--prefix", PREFIX])
        return process

    def worker(self) -> subprocess.Popen[bytes]:
        args = ["worker", APP, "--key", "hello", "--redis", self.redis_url, "--prefix", PREFIX]
        process, log = self._start("worker", [*args, "--log-level", "info"])
        deadline = time.monotonic() + 30
        while "Node listening" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):  # the edge was started first: it stops last
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Load:
    """Keep-alive connections sending requests back to back, in a thread of their own."""

    def __init__(self, port: int, connections: int) -> None:
        self.port, self.connections = port, connections
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        await asyncio.gather(*(self._connection() for _ in range(self.connections)))

    async def _connection(self) -> None:
        sent = 0
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.outcomes["connect error"] += 1
                await asyncio.sleep(0.1)
                continue
            try:
                while not self._stop.is_set():
                    sent += 1
                    writer.write(_request(post=sent % 10 == 0))
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                    length = _content_length(head)
                    body = await reader.readexactly(length) if length else b""
                    status = head.split(b" ", 2)[1].decode()
                    ok = status == "200" and body == BODY
                    method = "POST" if sent % 10 == 0 else "GET"
                    self.outcomes[
                        f"{method} {status if ok or status != '200' else 'wrong body'}"
                    ] += 1
                    if b"connection: close" in head.lower():
                        break
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                self.outcomes[type(exc).__name__] += 1
            finally:
                writer.close()


def _request(*, post: bool) -> bytes:
    if post:
        head = f"POST / HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(POST_BODY)}\r\n\r\n"
        return head.encode() + POST_BODY
    return b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"


def _content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _wait_serving(port: int, timeout: float = 30.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the gateway did not answer 200 in time")


def _keys_left(url: str) -> list[str]:
    """Keys under the prefix, but for the routes' retry counters (kept for ``status``)."""
    with redis.Redis.from_url(url) as client:
        keys = (k.decode() for k in client.scan_iter(match=f"{PREFIX}*", count=1000))
        return sorted(k for k in keys if not k.startswith(f"{PREFIX}:{RETRIES}:"))


def _retries(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.get(f"{PREFIX}:{RETRIES}:hello") or 0)


# No crash this close to the end: what a crashed worker leaves in Redis (its inbox, with the
# frames the edge sent it before giving up on it) expires (the layer's 60 s expiry) before the
# keys left are checked.
QUIET_BEFORE_END = 70.0
# Answers a crash may cause, by contract (see the module's docstring); any other is an error.
ALLOWED_AFTER_CRASH = {"GET 503", "POST 502", "POST 503"}


def soak(
    minutes: float, connections: int, restart_every: float, kill_every: float, warmup: float
) -> bool:
    print(
        f"soak: {minutes:g} min of load on {connections} connections, one worker replaced "
        f"every {restart_every:g} s, one killed every {kill_every:g} s (0: never), RSS "
        f"measured after a {warmup:g} s warm-up"
    )
    with tempfile.TemporaryDirectory() as logs, RedisProcess() as server:
        processes = Processes(server.url, Path(logs))
        edge = processes.edge()
        steady = processes.worker()
        rolling = processes.worker()
        crashing = processes.worker() if kill_every else None
        _wait_serving(processes.port)
        load = Load(processes.port, connections)
        load.start()
        started = time.monotonic()
        time.sleep(warmup)
        rss_start = {"edge": rss(edge.pid), "worker": rss(steady.pid)}
        end = started + minutes * 60
        restarts = kills = 0
        next_restart = time.monotonic() + restart_every
        next_kill = time.monotonic() + kill_every / 2 if kill_every else float("inf")
        while time.monotonic() < end:
            time.sleep(max(0.0, min(next_restart, next_kill, end) - time.monotonic()))
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_restart:
                replacement = processes.worker()
                rolling.send_signal(signal.SIGTERM)
                rolling.wait(60)
                rolling, restarts = replacement, restarts + 1
                next_restart += restart_every
                print(f"  {time.monotonic() - started:6.0f} s: worker replaced; {_line(load)}")
            if crashing is not None and now >= next_kill and end - now > QUIET_BEFORE_END:
                crashing.kill()
                crashing.wait(60)
                crashing, kills = processes.worker(), kills + 1
                next_kill += kill_every
                print(f"  {time.monotonic() - started:6.0f} s: worker killed; {_line(load)}")
        rss_end = {"edge": rss(edge.pid), "worker": rss(steady.pid)}
        load.stop()
        elapsed = time.monotonic() - started
        processes.stop_all()
        keys = _keys_left(server.url)
        retried = _retries(server.url)
        warnings = _warnings(Path(logs))

    total = sum(load.outcomes.values())
    failed = {k: v for k, v in load.outcomes.items() if not k.endswith(" 200")}
    errors = {k: v for k, v in failed.items() if k not in ALLOWED_AFTER_CRASH or not kills}
    print(
        f"\nrequests: {total:,} in {elapsed:.0f} s ({total / elapsed:,.0f}/s), {restarts} "
        f"restarts, {kills} crashes"
    )
    print(f"outcomes: {dict(load.outcomes)}")
    print(f"failed requests: {failed or 'none'}; requests retried by the edge: {retried}")
    checks: list[tuple[str, bool]] = [
        (f"no failure beyond what a crash may cause: {errors or 'none'}", not errors)
    ]
    for name in rss_start:
        before, after = rss_start[name], rss_end[name]
        change = (after - before) / before
        print(f"RSS {name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB ({change:+.1%})")
        checks.append((f"{name} RSS flat within {RSS_TOLERANCE:.0%}", abs(change) <= RSS_TOLERANCE))
    print(f"keys left under {PREFIX!r}: {keys or 'none'}")
    if warnings:
        print(f"warnings logged by the edge and the workers ({len(warnings)}, the first 20):")
        print("\n".join(f"  {line}" for line in warnings[:20]))
    checks.append(("no key left in Redis", not keys))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


def _warnings(logs: Path) -> list[str]:
    lines = []
    for log in sorted(logs.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.strip() and " INFO " not in line and not line.startswith("INFO"):
                lines.append(f"{log.stem}: {line}")
    return lines


def _line(load: Load) -> str:
    outcomes = dict(load.outcomes)
    return f"{sum(outcomes.values()):,} requests so far, {outcomes}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "3")))
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--restart-every", type=float, default=30.0)
    parser.add_argument("--kill-every", type=float, default=30.0, help="0: no crashes")
    parser.add_argument("--warmup", type=float, default=15.0)
    args = parser.parse_args(argv)
    ok = soak(args.minutes, args.connections, args.restart_every, args.kill_every, args.warmup)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
