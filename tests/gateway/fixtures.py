"""Real gateways for the tests: a uvicorn edge process and Node processes on the session Redis.

``gateway`` (per test) gives a ``Gateway``: ``start_edge()``, ``start_node()``, ``url()``, and
``stop()`` which kills whatever is still running, so no test leaves a process behind. For the
tests that need processes (signals, SIGKILL, memory, outages); the others run in-process with
``harness.run_gateway``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distributed_asgi.ops.redis_process import free_port
from tests.support import stop_processes, wait_until_listening

RUNNER = Path(__file__).with_name("runner.py")
ROOT = str(Path(__file__).resolve().parents[2])
FIDELITY_APP = "tests.gateway.apps.fidelity:app"
DEFAULT_ROUTES = [["^/", "fidelity"]]


class Gateway:
    def __init__(self, redis_url: str, prefix: str, workdir: Path) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.workdir = workdir
        self.port = 0
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.killed: list[str] = []

    def _spawn(self, kind: str, config: dict[str, Any], env: dict[str, str] | None = None) -> Any:
        log = self.workdir / f"{kind}-{len(self.processes)}.log"
        handle = open(log, "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, str(RUNNER), kind, json.dumps(config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MARKER_DIR": str(self.workdir), **(env or {})},
        )
        handle.close()
        self.processes.append((process, log))
        return process, log

    def start_edge(
        self,
        routes: list[list[str]] | None = None,
        uvicorn: dict[str, Any] | None = None,
        layer: dict[str, Any] | None = None,
        **options: Any,
    ) -> subprocess.Popen[bytes]:
        self.port = free_port()
        config = {
            "url": self.redis_url,
            "prefix": self.prefix,
            "port": self.port,
            "routes": routes or DEFAULT_ROUTES,
            "options": options,
            "uvicorn": uvicorn or {},
            "layer": layer or {},
        }
        process, log = self._spawn("edge", config)
        wait_until_listening(self.port, processes=[process], describe=log.read_text)
        return process  # type: ignore[no-any-return]

    def start_node(
        self,
        app: str = FIDELITY_APP,
        keys: list[str] | None = None,
        env: dict[str, str] | None = None,
        layer: dict[str, Any] | None = None,
        **options: Any,
    ) -> tuple[subprocess.Popen[bytes], Path]:
        config = {
            "url": self.redis_url,
            "prefix": self.prefix,
            "app": app,
            "keys": keys or ["fidelity"],
            "options": options,
            "layer": layer or {},
        }
        process, log = self._spawn("node", config, env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "Node listening" in log.read_text(errors="replace"):
                return process, log
            if process.poll() is not None:
                raise RuntimeError(f"node exited: {log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"node did not start in time: {log.read_text()}")

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def marker(self, name: str) -> Path:
        return self.workdir / name

    def wait_marker(self, name: str, timeout: float = 10.0) -> str:
        path = self.marker(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Markers are never empty: an empty file is one still being written.
            text = path.read_text() if path.exists() else ""
            if text:
                return text
            time.sleep(0.02)
        raise AssertionError(f"marker {name} did not appear in {timeout}s; logs:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')}" for _, log in self.processes
        )

    def stop(self) -> None:
        logs = dict(self.processes)
        # The layer's close() can take up to its block timeout (5 s) to return.
        for process in stop_processes([process for process, _ in self.processes], timeout=8):
            log = logs[process]
            self.killed.append(log.name)
            print(f"killed {log.name} after SIGTERM timed out:\n{log.read_text()[-3000:]}")


@pytest.fixture
def gateway(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(redis_url, prefix, tmp_path)
    yield gw
    gw.stop()
