"""A WebSocket denial response reaches the client whole behind the gateway, with every WebSocket
implementation uvicorn offers, as it does with the same app under uvicorn directly.

uvicorn's legacy ``websockets`` implementation answers the handshake as soon as the loop turns
after ``websocket.http.response.start``: body chunks that arrive later are lost. Directly, an
app's start and body come back to back; through the gateway they may come in separate frames.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from distributed_asgi.ops.redis_process import free_port
from tests.gateway.fixtures import ROOT, Gateway
from tests.support import stop_processes, wait_until_listening

APP = "tests.gateway.apps.denial:app"
IMPLEMENTATIONS = ["websockets", "websockets-sansio", "wsproto"]
CASES = {
    "/deny": b"no websockets here",
    "/deny-chunks": b"first part, second part, last part",
    "/deny-empty": b"",
}


class DirectUvicorn:
    """uvicorn serving the app itself with one ``--ws`` implementation: the reference."""

    def __init__(self, workdir: Path, ws: str) -> None:
        self.port = free_port()
        self.log = workdir / f"uvicorn-{ws}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", APP, "--port", str(self.port), "--ws", ws],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "MARKER_DIR": str(workdir)},
            )
        wait_until_listening(self.port, processes=[self.process], describe=self.log.read_text)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        stop_processes([self.process])


@pytest.fixture(params=IMPLEMENTATIONS)
def servers(
    request: pytest.FixtureRequest, gateway: Gateway, tmp_path: Path
) -> Iterator[tuple[DirectUvicorn, Gateway]]:
    ws = request.param
    if ws == "wsproto":
        pytest.importorskip("wsproto")
    direct = DirectUvicorn(tmp_path, ws)
    try:
        gateway.start_edge(routes=[["^/", "denial"]], uvicorn={"ws": ws})
        gateway.start_node(app=APP, keys=["denial"])
        yield direct, gateway
    finally:
        direct.stop()


def denial(url: str) -> tuple[int, bytes, str | None]:
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=10).close()
    response = info.value.response
    return response.status_code, bytes(response.body or b""), response.headers.get("x-denied")


def test_denial_body_reaches_the_client_whole(servers: tuple[DirectUvicorn, Gateway]) -> None:
    direct, gateway = servers
    for path, body in CASES.items():
        expected = denial(direct.url(path))
        assert expected == (403, body, "yes"), path  # the reference itself is whole
        for _ in range(5):  # frames may be split differently each time
            assert denial(gateway.url(path, "ws")) == expected, path
