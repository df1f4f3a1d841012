"""Serve an example app through the gateway: a real uvicorn edge and a real worker process.

Both are started the way users start them (``python -m distributed_asgi edge|worker``) on the
session's Redis server, with the test's own key prefix so tests never see each other's work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from distributed_asgi.layers.keys import NODE, KeySpace
from distributed_asgi.ops.redis_process import free_port
from tests.support import wait_until_listening

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Gateway:
    url: str
    worker_pids: list[int]

    @property
    def worker_pid(self) -> int:
        return self.worker_pids[0]


@contextlib.contextmanager
def serve_through_gateway(
    app: str, redis_url: str, prefix: str, workers: int = 1
) -> Iterator[Gateway]:
    port = free_port()
    cli = [sys.executable, "-m", "distributed_asgi"]
    layer = ["--redis", redis_url, "--prefix", prefix, "--log-level", "warning"]
    # Apps that use the channel layer themselves (the Django chat) find the server here.
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "REDIS_URL": redis_url,
        "CHAT_PREFIX": f"{prefix}-chat",
    }
    worker_args = [*cli, "worker", app, "--key", "site", "--app-dir", str(ROOT), *layer]
    worker_processes = [subprocess.Popen(worker_args, env=env) for _ in range(workers)]
    edge = subprocess.Popen(
        [*cli, "edge", "--route", "/=site", "--port", str(port), "--no-access-log", *layer],
        env=env,
    )
    processes = [edge, *worker_processes]
    try:
        wait_until_listening(port, processes=processes, timeout=30)
        # Every worker up (its presence written): one still importing the app when the test
        # ends would be stopped before it handles signals, and the exit codes below mean a
        # stop of a running worker.
        wait_for_workers(redis_url, prefix, workers, timeout=30)
        yield Gateway(url=f"http://127.0.0.1:{port}", worker_pids=[w.pid for w in worker_processes])
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in processes:
            try:
                codes.append(process.wait(30))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
    assert codes == [0] * len(processes), f"edge and worker exit codes after SIGTERM: {codes}"


def wait_for_workers(redis_url: str, prefix: str, count: int, *, timeout: float) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while len(list(client.scan_iter(KeySpace(prefix).pattern(NODE)))) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} worker(s) up after {timeout:.0f}s")
            time.sleep(0.05)
    finally:
        client.close()


Start = Callable[..., contextlib.AbstractContextManager[Gateway]]


@pytest.fixture
def gateway(redis_url: str, prefix: str) -> Start:
    def start(app: str, workers: int = 1) -> contextlib.AbstractContextManager[Gateway]:
        return serve_through_gateway(app, redis_url, prefix, workers)

    return start
