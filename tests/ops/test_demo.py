"""``make demo ARGS=--once``: the whole system on a private Redis, checked by its own requests."""

from __future__ import annotations

import os
import subprocess
import sys

from distributed_asgi.ops.redis_process import free_port


def test_demo_once_checks_itself_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # its own private server
    result = subprocess.run(
        [sys.executable, "-m", "distributed_asgi.ops.demo", "--once", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=100,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "(private server, pid" in output
    assert "ok  WebSocket /ws" in output
    assert "All checks passed; stopping (--once)." in output
    assert "Stopped 3 process(es) and the private Redis server: nothing left behind." in output
