"""An application sending ASGI messages out of order gets what uvicorn gives it: the same
RuntimeError text in the application, the same log, and the same answer for the client (500 when
nothing was sent, a cut connection when the response had started). Each case runs against a real
direct uvicorn and through the gateway in the same test, and the two are compared."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from distributed_asgi.ops.redis_process import free_port
from tests.gateway.fixtures import ROOT, Gateway
from tests.support import stop_processes, wait_until_listening

APP = "tests.gateway.apps.out_of_order:app"
CASES = ["body-before-start", "start-twice", "after-complete", "nothing"]


class Direct:
    """uvicorn serving the app itself, as the reference."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "uvicorn.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", APP, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "MARKER_DIR": str(workdir)},
            )
        wait_until_listening(self.port, processes=[self.process], describe=self.log.read_text)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        stop_processes([self.process])


@pytest.fixture
def servers(gateway: Gateway, tmp_path: Path) -> Iterator[tuple[Direct, Gateway]]:
    direct_dir = tmp_path / "direct"
    direct_dir.mkdir()
    direct = Direct(direct_dir)
    try:
        gateway.start_edge()
        gateway.start_node(app=APP)
        yield direct, gateway
    finally:
        direct.stop()


def outcome(url: str) -> tuple[object, ...]:
    try:
        response = httpx.get(url, timeout=10)
    except httpx.RemoteProtocolError:
        return ("connection cut",)
    return (response.status_code, response.text)


def wait_for_text(path: Path, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in {path}:\n{text}")


def test_the_error_texts_are_uvicorns(servers: tuple[Direct, Gateway]) -> None:
    direct, gateway = servers
    for case in ["body-before-start", "start-twice"]:
        expected = outcome(direct.url(f"/catch/{case}"))
        assert expected[0] == 200 and "Expected ASGI message" in str(expected[1]), expected
        assert outcome(gateway.url(f"/catch/{case}")) == expected, case
    for case in ["after-complete"]:
        assert outcome(direct.url(f"/catch/{case}")) == (200, "done")
        assert outcome(gateway.url(f"/catch/{case}")) == (200, "done")
        direct_text = wait_for_text(direct.workdir / case, "Unexpected ASGI message")
        assert wait_for_text(gateway.marker(case), "Unexpected") == direct_text


def test_uncaught_errors_get_the_same_answer_and_log(servers: tuple[Direct, Gateway]) -> None:
    direct, gateway = servers
    node_log = next(log for _, log in gateway.processes if log.name.startswith("node"))
    for case in CASES:
        expected = outcome(direct.url(f"/raise/{case}"))
        assert outcome(gateway.url(f"/raise/{case}")) == expected, case
        if case in ("body-before-start", "nothing"):
            assert expected == (500, "Internal Server Error"), expected
        elif case == "start-twice":
            assert expected == ("connection cut",), expected
        else:
            assert expected == (200, "done"), expected
    # The application's error, as each server logs it.
    for line in [
        "RuntimeError: Expected ASGI message 'http.response.start', but got 'http.response.body'.",
        "RuntimeError: Expected ASGI message 'http.response.body', but got 'http.response.start'.",
        "RuntimeError: Unexpected ASGI message 'http.response.body' sent, after response already "
        "completed.",
        "ASGI callable returned without starting response.",
    ]:
        wait_for_text(direct.log, line)
        wait_for_text(node_log, line)
    # And both servers keep serving.
    assert outcome(direct.url("/catch/body-before-start"))[0] == 200
    assert outcome(gateway.url("/catch/body-before-start"))[0] == 200


def test_websocket_out_of_order(servers: tuple[Direct, Gateway]) -> None:
    direct, gateway = servers
    received = []
    for url in (direct.url("/ws", "ws"), gateway.url("/ws", "ws")):
        with connect(url) as ws:
            received.append(str(ws.recv(timeout=10)))
    assert received[0].startswith("Expected ASGI message 'websocket.accept'"), received
    assert received[1] == received[0]
    # The application's send after its close: the same RuntimeError text from both.
    direct_text = wait_for_text(direct.workdir / "ws-after-close", "Unexpected ASGI message")
    assert wait_for_text(gateway.marker("ws-after-close"), "Unexpected") == direct_text
