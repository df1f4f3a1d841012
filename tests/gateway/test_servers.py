"""The edge under every ASGI server ``distributed-asgi edge --server`` runs: uvicorn, hypercorn,
granian and daphne serve the same cases to real Nodes through a real Redis.

Each edge is the command itself (``servers_edge.py``, which only adds markers for lifespan
start-up and the layer's close). A server whose package is missing is skipped, saying so.
docs/servers.md describes what differs between them.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from distributed_asgi.ops.cli.main import main
from distributed_asgi.ops.redis_process import free_port
from tests.gateway.fixtures import Gateway
from tests.support import wait_until_listening

SERVERS = ["uvicorn", "hypercorn", "granian", "daphne"]
EDGE = Path(__file__).with_name("servers_edge.py")
APP = "tests.gateway.apps.servers:app"
MIB = 1024 * 1024
PATTERN = bytes(range(256)) * 256  # what /big sends, 64 KiB at a time


def available(server: str) -> Any:
    missing = importlib.util.find_spec(server) is None
    reason = f"{server} is not installed (pip install 'distributed-asgi[{server}]')"
    return pytest.param(server, marks=pytest.mark.skipif(missing, reason=reason), id=server)


every_server = pytest.mark.parametrize("server", [available(s) for s in SERVERS])


def start_edge(
    gateway: Gateway, server: str, *args: str, routes: tuple[str, ...] = ("^/=fidelity",)
) -> subprocess.Popen[bytes]:
    """``distributed-asgi edge --server SERVER`` on a free port, listening when it returns."""
    gateway.port = free_port()
    command = [sys.executable, str(EDGE), "edge", "--server", server, "--port", str(gateway.port)]
    command += ["--redis", gateway.redis_url, "--prefix", gateway.prefix, *args]
    for route in routes:
        command += ["--route", route]
    log = gateway.workdir / f"edge-{server}-{len(gateway.processes)}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MARKER_DIR": str(gateway.workdir)},
        )
    gateway.processes.append((process, log))
    wait_until_listening(gateway.port, processes=[process], describe=log.read_text)
    return process


def command_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, ["edge", "--route", "/=a", *args])
    assert result.exit_code == 1, result.output
    return result.output.strip().splitlines()[-1]


def test_a_missing_server_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "granian", None)  # import granian now fails
    assert command_error(["--server", "granian"]) == (
        "Error: --server granian needs the granian package: pip install 'distributed-asgi[granian]'"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--server", "hypercorn", "--http", "h11"], "--http is uvicorn's option; hypercorn "),
        (["--server", "daphne", "--loop", "uvloop"], "--loop uvloop: daphne runs on Twisted's "),
        (["--ssl-certfile", __file__], "--ssl-certfile and --ssl-keyfile go together"),
    ],
)
def test_options_a_server_cannot_take_stop_the_start(args: list[str], error: str) -> None:
    if "--server" in args:
        pytest.importorskip(args[1])
    assert command_error(args).startswith(f"Error: {error}")


@pytest.fixture
def node(gateway: Gateway) -> subprocess.Popen[bytes]:
    process, _ = gateway.start_node(APP, heartbeat_interval=0.3)
    return process


@every_server
def test_a_streamed_response(gateway: Gateway, node: Any, server: str) -> None:
    start_edge(gateway, server)
    received = bytearray()
    with httpx.stream("GET", gateway.url("/big"), params={"mb": 8}, timeout=30) as response:
        assert response.status_code == 200
        chunks = 0
        for chunk in response.iter_bytes():
            received += chunk
            chunks += 1
    assert len(received) == 8 * MIB and received == PATTERN * (8 * MIB // len(PATTERN))
    assert chunks > 1  # it arrived as it was sent, not in one piece


@every_server
def test_a_streamed_upload(gateway: Gateway, node: Any, server: str) -> None:
    start_edge(gateway, server)
    parts = [bytes([n]) * 64 * 1024 for n in range(64)]  # 4 MiB, chunked
    response = httpx.post(gateway.url("/echo"), content=iter(parts), timeout=30)
    assert response.status_code == 200
    assert response.content == b"".join(parts)


@every_server
def test_a_websocket_echo_and_its_close_codes(gateway: Gateway, node: Any, server: str) -> None:
    start_edge(gateway, server)
    offered = [Subprotocol("a"), Subprotocol("b")]
    with connect(gateway.url("/ws?marker=client-closed", "ws"), subprotocols=offered) as ws:
        assert ws.subprotocol == "b"
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"echo:\x00\xff"
        ws.close(4005)
    # The client's code reaches the app, except through hypercorn (0.18), which reports every
    # close the client starts as 1006.
    expected = "1006" if server == "hypercorn" else "4005"
    assert gateway.wait_marker("client-closed") == expected
    with connect(gateway.url("/ws", "ws")) as ws, pytest.raises(ConnectionClosed) as info:
        ws.send("close:4321")
        ws.recv(timeout=10)
    # The app's code and reason reach the client; daphne (4.2) sends the code alone.
    assert info.value.rcvd is not None
    reason = "" if server == "daphne" else "bye"
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4321, reason)


@every_server
def test_no_node_for_the_route_is_503(gateway: Gateway, server: str) -> None:
    start_edge(gateway, server, "--pickup-timeout", "0.5", routes=("^/=nobody-home",))
    started = time.monotonic()
    response = httpx.get(gateway.url("/hello"), timeout=10)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert 0.5 <= time.monotonic() - started < 3


@every_server
def test_a_node_killed_mid_request_is_502(gateway: Gateway, node: Any, server: str) -> None:
    start_edge(gateway, server)

    def kill_when_started() -> None:
        gateway.wait_marker("dying")
        time.sleep(0.3)  # past the accept: the edge knows this Node has the connection
        os.kill(node.pid, signal.SIGKILL)

    thread = threading.Thread(target=kill_when_started)
    thread.start()
    started = time.monotonic()
    response = httpx.get(gateway.url("/pid"), params={"sleep": 30, "marker": "dying"}, timeout=20)
    thread.join()
    assert response.status_code == 502
    assert time.monotonic() - started < 10


@every_server
def test_no_first_byte_in_time_is_504(gateway: Gateway, node: Any, server: str) -> None:
    start_edge(gateway, server, "--first-byte-timeout", "1")
    started = time.monotonic()
    response = httpx.get(gateway.url("/pid"), params={"sleep": 2.5}, timeout=20)
    assert response.status_code == 504
    assert 1 <= time.monotonic() - started < 2.5


@every_server
def test_lifespan_and_a_clean_shutdown(gateway: Gateway, node: Any, server: str) -> None:
    edge = start_edge(gateway, server)
    assert httpx.get(gateway.url("/hello"), timeout=10).text == "hello, world"
    started = gateway.marker("edge-lifespan-startup").exists()
    # daphne has no lifespan: the distributor never hears start-up, and needs none.
    assert started == (server != "daphne"), gateway.logs()
    edge.send_signal(signal.SIGTERM)
    assert edge.wait(timeout=15) == 0, gateway.logs()
    assert gateway.marker("edge-layer-closed").exists(), gateway.logs()  # every server closed it


@every_server
def test_the_scope_the_node_sees(gateway: Gateway, node: Any, server: str) -> None:
    start_edge(gateway, server)
    scope = httpx.get(gateway.url("/scope?q=1"), timeout=10).json()
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", gateway.port]
    # Only what every hop supports crosses: never push, trailers, pathsend or early hints.
    assert set(scope["extensions"]) <= {"tls", "websocket.http.response"}


# -- HTTP/2 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.gateway.test_security import _make_certificates

    return _make_certificates(tmp_path_factory.mktemp("servers-tls"))


@pytest.mark.parametrize("server", [available("hypercorn"), available("granian")])
def test_http2_cleartext_reaches_the_node_as_http_version_2(
    gateway: Gateway, node: Any, server: str
) -> None:
    start_edge(gateway, server)
    with httpx.Client(http1=False, http2=True, timeout=10) as client:  # h2c, prior knowledge
        response = client.get(gateway.url("/scope"))
        streamed = client.get(gateway.url("/big"), params={"mb": 2})
    assert response.http_version == "HTTP/2"
    assert response.json()["http_version"] == "2"
    assert streamed.http_version == "HTTP/2" and len(streamed.content) == 2 * MIB


@every_server
def test_tls_with_a_test_ca_and_http2_where_the_server_has_it(
    gateway: Gateway, node: Any, server: str, certificates: Any
) -> None:
    tls = ["--ssl-certfile", str(certificates.cert), "--ssl-keyfile", str(certificates.key)]
    start_edge(gateway, server, *tls)
    context = ssl.create_default_context(cafile=str(certificates.ca))
    with httpx.Client(http2=True, verify=context, timeout=10) as client:  # ALPN picks h2
        response = client.get(gateway.url("/scope", "https"))
        upload = client.post(gateway.url("/echo", "https"), content=iter([b"x" * MIB] * 3))
    # uvicorn has no HTTP/2; daphne has it over TLS when Twisted can (h2 and pyOpenSSL).
    http2 = server != "uvicorn" and (server != "daphne" or daphne_has_http2())
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    scope = response.json()
    assert (scope["http_version"], scope["scheme"]) == ("2" if http2 else "1.1", "https")
    assert upload.status_code == 200 and len(upload.content) == 3 * MIB


def daphne_has_http2() -> bool:
    from twisted.web import http

    return bool(http.H2_ENABLED)


# -- each server's own command, serving a distributor.py ---------------------------------------

DISTRIBUTOR = "tests.gateway.apps.server_distributor:app"
OWN_COMMANDS = {
    "uvicorn": ["uvicorn", DISTRIBUTOR, "--port", "{port}"],
    "hypercorn": ["hypercorn", DISTRIBUTOR, "--bind", "127.0.0.1:{port}"],
    "granian": ["granian", "--interface", "asgi", "--port", "{port}", DISTRIBUTOR],
    "daphne": ["daphne", "--port", "{port}", DISTRIBUTOR],
}


@every_server
def test_the_servers_own_command_as_documented(gateway: Gateway, node: Any, server: str) -> None:
    gateway.port = free_port()
    program, *args = OWN_COMMANDS[server]
    command = [str(Path(sys.executable).with_name(program))]
    command += [arg.format(port=gateway.port) for arg in args]
    log = gateway.workdir / f"{server}-own.log"
    env = {**os.environ, "EDGE_REDIS_URL": gateway.redis_url, "EDGE_PREFIX": gateway.prefix}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with open(log, "wb") as handle:
        edge = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=root)
    gateway.processes.append((edge, log))
    wait_until_listening(gateway.port, processes=[edge], describe=log.read_text)
    assert httpx.get(gateway.url("/hello"), timeout=10).text == "hello, world"
    with connect(gateway.url("/ws", "ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
    edge.send_signal(signal.SIGTERM)
    # uvicorn's own command re-raises the signal once its graceful shutdown is done.
    clean = (0, -signal.SIGTERM) if server == "uvicorn" else (0,)
    assert edge.wait(timeout=15) in clean, log.read_text()


# What SIGTERM does to what is open: the client's WebSocket close code (None: dropped without
# a close frame), the code the Node's application hears, and whether an in-flight request
# still gets its response.
SHUTDOWN = {
    "uvicorn": (1012, "1012", True),
    "hypercorn": (1012, "1012", True),
    "granian": (None, "1005", True),
    "daphne": (1000, "1012", False),  # autobahn sends no 1012; daphne cancels requests
}


@every_server
def test_sigterm_closes_websockets_and_drains_requests(
    gateway: Gateway, node: Any, server: str
) -> None:
    edge = start_edge(gateway, server)
    client_code, app_code, drains = SHUTDOWN[server]
    outcome: dict[str, object] = {}

    def slow_request() -> None:
        try:
            response = httpx.get(gateway.url("/pid"), params={"sleep": 1.5}, timeout=10)
            outcome["status"] = response.status_code
        except httpx.HTTPError as exc:
            outcome["status"] = type(exc).__name__

    with connect(gateway.url("/ws?marker=ws-shutdown", "ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
        request = threading.Thread(target=slow_request)
        request.start()
        time.sleep(0.5)  # the request is in flight
        edge.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        request.join()
    assert (info.value.rcvd.code if info.value.rcvd else None) == client_code
    assert gateway.wait_marker("ws-shutdown") == app_code
    assert (outcome["status"] == 200) == drains, outcome
    assert edge.wait(timeout=15) == 0, gateway.logs()


@every_server
def test_a_taken_port_fails_the_start_with_exit_code_3(gateway: Gateway, server: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, str(EDGE), "edge", "--server", server, "--port", str(port)]
        command += ["--redis", gateway.redis_url, "--route", "/=a"]
        env = {**os.environ, "MARKER_DIR": str(gateway.workdir)}
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 3, result.stderr + result.stdout
    assert "in use" in result.stderr + result.stdout
