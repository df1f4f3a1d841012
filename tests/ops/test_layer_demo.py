"""The layer tour runs end to end: two processes, a group, encryption at rest."""

from __future__ import annotations

import subprocess
import sys


def test_layer_demo_runs(redis_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distributed_asgi.ops.layer_demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "direct send  -> 'ping'" in result.stdout
    assert "group_send   -> 'hi all'" in result.stdout
    assert "card" not in result.stdout.split("at rest")[1]
