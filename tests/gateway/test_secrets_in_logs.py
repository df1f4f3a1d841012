"""No secret in anything the edge or a worker prints: start-up, an outage, failed
authentication, bad configuration. Real ``distributed-asgi edge`` and ``worker`` processes, debug
logging, a Redis password in the URL (an ACL user) and an encryption key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from distributed_asgi.ops.redis_process import RedisProcess, free_port
from tests.gateway.fixtures import ROOT

PASSWORD = "pw-SECRET-7f3a9c"
WRONG_PASSWORD = "pw-WRONG-SECRET-c41d"
KEY = "key-SECRET-" + "3b8e51d0" * 5
SHORT_KEY = "short-SECRET"
SECRETS = (PASSWORD, WRONG_PASSWORD, KEY, SHORT_KEY)


def cli(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "distributed_asgi", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=ROOT,
        )


def wait_for(what: Callable[[], bool], timeout: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.05)
    raise AssertionError(message())


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_logs_or_errors(
    redis_factory: Callable[..., RedisProcess], prefix: str, tmp_path: Path, log_format: str
) -> None:
    # The user survives the restart below: it is part of the server's command line.
    server = redis_factory(args=["--user", "gateway", "on", f">{PASSWORD}", "~*", "+@all"])
    url = f"redis://gateway:{PASSWORD}@127.0.0.1:{server.port}/0"
    wrong_url = f"redis://gateway:{WRONG_PASSWORD}@127.0.0.1:{server.port}/0"
    common = ["--prefix", prefix, "--log-level", "debug", "--log-format", log_format]
    worker_args = ["worker", "tests.gateway.apps.fidelity:app", "--key", "fidelity"]
    worker_args += ["--app-dir", ROOT, *common]
    port = free_port()
    keys = {"DISTRIBUTED_ASGI_ENCRYPTION_KEYS": KEY, "MARKER_DIR": str(tmp_path)}
    logs: dict[str, Path] = {}
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> None:
        logs[name] = tmp_path / f"{name}.log"
        processes.append(cli(args, logs[name], env))

    def text(name: str) -> str:
        return logs[name].read_text(errors="replace")

    def everything() -> str:
        return "\n".join(f"--- {name}\n{text(name)}" for name in logs)

    try:
        # Bad configuration: each fails at start-up with an error.
        bad = {
            "bad-port": [
                "edge",
                "--route",
                "/=fidelity",
                "--redis",
                url.replace(f":{server.port}/", ":99999/"),
            ],
            "bad-db": ["worker", "json:dumps", "--key", "k", "--redis", url + "x"],
            "short-key": [
                "edge",
                "--route",
                "/=a",
                "--redis",
                url,
                "--encryption-key",
                KEY,
                "--encryption-key",
                SHORT_KEY,
            ],
        }
        for name, args in bad.items():
            start(name, args, {})
            assert processes[-1].wait(30) != 0, text(name)
            assert text(name).startswith("Error: "), text(name)
        assert "gateway:***@" in text("bad-port")

        # Start-up and serving: the URL on the edge's command line, in the worker's environment.
        start(
            "edge",
            [
                "edge",
                "--route",
                "/=fidelity",
                "--port",
                str(port),
                "--redis",
                url,
                "--pickup-timeout",
                "1",
                *common,
            ],
            keys,
        )
        start("worker", worker_args, {**keys, "REDIS_URL": url})
        wait_for(lambda: "Node listening" in text("worker"), 20, everything)
        wait_for(lambda: "Application startup complete" in text("edge"), 20, everything)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert http.get("/hello").text == "hello, world"
            # An outage: logged by both, requests fail fast, then served again.
            server.stop()
            assert http.get("/hello").status_code == 503
            wait_for(lambda: "unreachable" in text("worker"), 15, everything)
            server.start()
            status = 0
            deadline = time.monotonic() + 20
            while status != 200 and time.monotonic() < deadline:
                status = http.get("/hello").status_code
            assert status == 200, everything()
        wait_for(lambda: "reachable again" in text("worker"), 15, everything)
        # Started after the outage: a worker that meets the outage first logs "unreachable" once
        # and says no more until Redis answers, which for a wrong password it never does.
        start(
            "wrong-password",
            ["worker", "json:dumps", "--key", "nobody", "--redis", wrong_url, *common],
            keys,
        )
        # The status command, with the right and with a wrong password.
        for name, status_url in (("status", url), ("status-wrong-password", wrong_url)):
            start(name, ["status", "--redis", status_url, "--prefix", prefix], {})
            processes[-1].wait(30)
        assert "Route channels" in text("status"), text("status")
        wait_for(lambda: "invalid username-password" in text("wrong-password"), 15, everything)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    output = everything()
    assert "cannot reach Redis" in text("edge") or "unreachable" in text("edge"), output
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} printed:\n{output}"
