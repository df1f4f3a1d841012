"""The command line: help, start-up errors that name the bad value, and a real ``up`` run."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import redis
from click.testing import CliRunner

from bench.counters import child_pids
from distributed_asgi.ops.cli.main import gather_routes, main
from distributed_asgi.ops.cli.options import check_redis_url
from distributed_asgi.ops.redis_process import free_port


@pytest.mark.parametrize("command", [[], ["edge"], ["worker"], ["up"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_installed_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distributed_asgi", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "edge" in result.stdout and "worker" in result.stdout and "up" in result.stdout


def _error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output.strip().splitlines()[-1]


def test_invalid_route_regex_names_it() -> None:
    assert _error(["edge", "--route", "bad(=X"]) == (
        "Error: invalid route 'bad(': missing ), unterminated subpattern at position 3"
    )


def test_route_without_key() -> None:
    assert _error(["edge", "--route", "/api"]) == (
        "Error: invalid route '/api': expected REGEX=KEY, e.g. '/api/(.*)=api'"
    )


def test_route_template_with_unknown_group_names_the_route() -> None:
    message = _error(["edge", "--route", r"/api/([a-z]+)=API-\2"])
    assert message.startswith("Error: route '/api/([a-z]+)' -> 'API-\\\\2'")
    assert "group 2" in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:6379", "URL must start with redis://, rediss:// or unix://"),
        ("redis://localhost:99999/0", "Port out of range"),
        ("redis://localhost:6379/zero", "database must be a number, got 'zero'"),
    ],
)
def test_bad_redis_url_names_it(url: str, reason: str) -> None:
    for command in (["edge", "--route", "/=site"], ["worker", "json:dumps", "--key", "site"]):
        message = _error([*command, "--redis", url])
        assert message.startswith(f"Error: invalid Redis URL '{url}': ")
        assert reason in message


def test_redis_url_password_is_masked() -> None:
    message = _error(["edge", "--route", "/=a", "--redis", "http://:secret@host"])
    assert "secret" not in message and "***" in message


@pytest.mark.parametrize(
    "command",
    [["edge", "--route", "/=a"], ["worker", "json:dumps", "--key", "a"], ["up", "json:dumps"]],
)
def test_a_bad_encryption_key_is_named_by_position_never_shown(command: list[str]) -> None:
    good = "g" * 40
    message = _error([*command, "--encryption-key", good, "--encryption-key", "tiny-secret"])
    assert message.startswith("Error: encryption key #2 has 11 characters; use at least 32")
    assert "tiny-secret" not in message and good not in message


def test_encryption_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTRIBUTED_ASGI_ENCRYPTION_KEYS", "k" * 40 + " short-secret")
    message = _error(["edge", "--route", "/=a"])
    assert message == (
        "Error: encryption key #2 has 12 characters; use at least 32, e.g. from "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )


def test_redis_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "mysql://db")
    assert _error(["edge", "--route", "/=a"]).startswith("Error: invalid Redis URL 'mysql://db'")


def test_worker_app_errors_are_uvicorns() -> None:
    assert _error(["worker", "no_such_module:app", "--key", "a"]) == (
        'Error: Could not import module "no_such_module".'
    )
    assert _error(["worker", "json", "--key", "a"]) == (
        'Error: Import string "json" must be in format "<module>:<attribute>".'
    )
    assert _error(["worker", "json:nope", "--key", "a"]) == (
        'Error: Attribute "nope" not found in module "json".'
    )


def test_worker_needs_a_valid_key() -> None:
    assert "Missing option '--key'" in CliRunner().invoke(main, ["worker", "json:dumps"]).output
    assert _error(["worker", "json:dumps", "--key", "a!b"]).startswith("Error: invalid key 'a!b': ")


def test_up_needs_keys_when_every_route_is_dynamic() -> None:
    assert _error(["up", "json:dumps", "--route", r"/(\w+)=k-\1"]) == (
        "Error: every route's key uses a backreference: say which keys to serve with --key"
    )


def test_routes_file_keeps_order_and_comes_after_route_options(tmp_path: Path) -> None:
    routes = {"/api/([a-z-]+)": r"API-\1", "/worker/([0-9]+)": r"worker-queue-\1", "/": "ALL"}
    as_json = tmp_path / "routes.json"
    as_json.write_text(json.dumps(routes))
    as_toml = tmp_path / "routes.toml"
    as_toml.write_text(
        textwrap.dedent(
            r"""
            [routes]
            "/api/([a-z-]+)" = 'API-\1'
            "/worker/([0-9]+)" = 'worker-queue-\1'
            "/" = "ALL"
            """
        )
    )
    expected = [("/first", "first"), *routes.items()]
    assert gather_routes(["/first=first"], str(as_json)) == expected
    assert gather_routes(["/first=first"], str(as_toml)) == expected


def test_bad_routes_file(tmp_path: Path) -> None:
    broken = tmp_path / "routes.json"
    broken.write_text("{not json")
    assert _error(["edge", "--routes", str(broken)]).startswith(
        f"Error: invalid routes file '{broken}': "
    )
    assert _error(["edge", "--routes", str(tmp_path / "missing.json")]) == (
        f"Error: cannot read routes file '{tmp_path / 'missing.json'}': No such file or directory"
    )
    listed = tmp_path / "list.json"
    listed.write_text('[["/", "a"]]')
    assert _error(["edge", "--routes", str(listed)]) == (
        f"Error: invalid routes file '{listed}': expected a non-empty mapping of regex to key"
    )


def test_edge_needs_a_route() -> None:
    assert _error(["edge"]) == (
        "Error: no routes: give at least one --route REGEX=KEY or --routes FILE"
    )


# -- a real `up` --------------------------------------------------------------------------

TINY_APP = """
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"hello from {os.getpid()} at {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def _children(pid: int) -> set[int]:
    """Direct children of ``pid`` (the supervisor's redis, workers and edge)."""
    return child_pids(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_output(path: Path, text: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        output = path.read_text()
        if text in output:
            return output
        assert process.poll() is None, f"up exited with {process.returncode}:\n{output}"
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never printed:\n{path.read_text()}")


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads child processes from /proc")
def test_up_serves_then_stops_everything_on_sigint(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    (tmp_path / "tiny_up_app.py").write_text(TINY_APP)
    port = free_port()
    log = tmp_path / "up.log"
    args = ["up", "tiny_up_app:app", "--workers", "2", "--port", str(port)]
    args += ["--app-dir", str(tmp_path), "--redis", redis_url, "--prefix", prefix]
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "distributed_asgi", *args, "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        output = _wait_for_output(log, "Ctrl-C stops everything", up)
        assert f"edge     http://127.0.0.1:{port}" in output
        assert "workers  2 x tiny_up_app:app, keys app" in output

        children = _children(up.pid)
        assert len(children) == 3  # two workers and the edge; Redis is the session's

        # Each part was reported as it started and again when it was ready (workers listening,
        # in any order), before the summary; plain text, since stdout is a file here.
        assert "\x1b" not in output
        steps = [line for line in output.splitlines() if line.startswith("[")]
        assert len(steps) == 8, steps
        assert steps[0] == f"[1/4] redis: connecting to {redis_url} ..."
        assert re.fullmatch(
            rf"\[1/4\] redis: reachable; keys go under '{prefix}:' \(.* s\)", steps[1]
        )
        starting = [
            re.fullmatch(
                rf"\[{n + 2}/4\] worker {n + 1}: starting tiny_up_app:app, pid (\d+) ...", line
            )
            for n, line in enumerate(steps[2:4])
        ]
        worker_pids = [int(match[1]) for match in starting if match]
        edge_starting = re.fullmatch(
            rf"\[4/4\] edge: starting on http://127.0.0.1:{port}, pid (\d+) ...", steps[4]
        )
        assert edge_starting is not None and len(worker_pids) == 2
        assert {*worker_pids, int(edge_starting[1])} == children
        ready = sorted(steps[5:], key=lambda line: line[:6])
        for number, (line, pid) in enumerate(zip(ready[:2], worker_pids, strict=True), start=1):
            assert re.fullmatch(
                rf"\[{number + 1}/4\] worker {number}: listening on app, pid {pid} \(.* s\)", line
            ), line
        assert re.fullmatch(
            rf"\[4/4\] edge: accepting connections on http://127.0.0.1:{port}, "
            rf"pid {edge_starting[1]} \(.* s\)",
            ready[2],
        ), ready[2]
        assert output.index(steps[7]) < output.index("distributed-asgi up\n")

        response = httpx.get(f"http://127.0.0.1:{port}/some/path", timeout=20)
        assert response.status_code == 200
        served_by = int(response.text.split()[2])
        assert served_by in children
        assert response.text.endswith(" at /some/path")

        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, log.read_text()
        assert f"and the keys under '{prefix}:': nothing left behind." in log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert not [pid for pid in children if _alive(pid)]
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys(f"{prefix}:*") == []
    finally:
        client.close()


def _get_once_serving(url: str, edge: subprocess.Popen[bytes]) -> httpx.Response:
    """GET ``url`` as soon as the edge listens; it must not exit first, nor take over 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.ConnectError:
            assert time.monotonic() < deadline and edge.poll() is None
            time.sleep(0.05)


def _stop_cleanly(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM every process, then each must exit 0 (a clean stop) within 30 s."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        assert process.wait(30) == 0


def test_bad_distributor_option_names_it() -> None:
    assert _error(["edge", "--route", "/=a", "--no-worker-status", "200"]) == (
        "Error: no_worker_status must be an HTTP error status, got 200"
    )


def test_edge_without_workers_answers_the_configured_status(redis_url: str, prefix: str) -> None:
    port = free_port()
    args = ["edge", "--route", "/=nobody-home", "--port", str(port), "--redis", redis_url]
    args += ["--prefix", prefix, "--pickup-timeout", "0.5", "--no-worker-status", "405"]
    edge = subprocess.Popen([sys.executable, "-m", "distributed_asgi", *args])
    try:
        response = _get_once_serving(f"http://127.0.0.1:{port}/anything", edge)
        assert response.status_code == 405
        assert "retry-after" in response.headers
    finally:
        _stop_cleanly(edge)


SEED_APP = """
class ASGIApp:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"Hello World!"})
"""


def test_worker_serves_the_seeds_asgi2_class_and_exits_0_on_sigterm(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    (tmp_path / "seed_worker_app.py").write_text(SEED_APP)
    port = free_port()
    cli = [sys.executable, "-m", "distributed_asgi"]
    layer = ["--redis", redis_url, "--prefix", prefix, "--log-level", "warning"]
    app = ["seed_worker_app:ASGIApp", "--key", "ASGI-testing", "--app-dir", str(tmp_path)]
    worker = subprocess.Popen([*cli, "worker", *app, *layer])
    edge = subprocess.Popen(
        [*cli, "edge", "--route", r"/api/([a-z-]+)=ASGI-\1", "--port", str(port), *layer]
    )
    try:
        response = _get_once_serving(f"http://127.0.0.1:{port}/api/testing/1", edge)
        assert response.status_code == 200
        assert response.text == "Hello World!"
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=10).status_code == 404
    finally:
        _stop_cleanly(edge, worker)


def test_up_refuses_a_port_in_use_before_starting_anything() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = _error(["up", "json:dumps", "--port", str(port)])
    assert message == f"Error: cannot serve on 127.0.0.1:{port}: Address already in use"


def test_worker_stopped_while_importing_its_app_exits_0(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "slow_import_app.py").write_text(
        "import pathlib, time\n"
        "pathlib.Path(__file__).with_suffix('.started').touch()\n"
        "time.sleep(30)\n"
        "app = None\n"
    )
    args = ["slow_import_app:app", "--key", "k", "--app-dir", str(tmp_path), "--redis", redis_url]
    worker = subprocess.Popen([sys.executable, "-m", "distributed_asgi", "worker", *args])
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "slow_import_app.started").exists():
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads child processes from /proc")
def test_up_hands_secrets_to_its_children_by_environment_only(
    tmp_path: Path, redis_factory: Any, prefix: str
) -> None:
    """Encryption keys and a Redis password reach the workers and the edge (they serve, and a
    plain frame is refused), but never a command line (``ps``) nor anything up prints."""
    password, key = "up-PASSWORD-91c2", "up-KEY-" + "5d1e" * 10
    server = redis_factory(args=["--user", "up", "on", f">{password}", "~*", "+@all"])
    url = f"redis://up:{password}@127.0.0.1:{server.port}/0"
    (tmp_path / "tiny_up_app.py").write_text(TINY_APP)
    port = free_port()
    log = tmp_path / "up.log"
    args = ["up", "tiny_up_app:app", "--port", str(port), "--app-dir", str(tmp_path)]
    args += ["--prefix", prefix, "--log-level", "warning"]
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "distributed_asgi", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "REDIS_URL": url,
                "DISTRIBUTED_ASGI_ENCRYPTION_KEYS": key,
            },
        )
    try:
        _wait_for_output(log, "Ctrl-C stops everything", up)
        children = _children(up.pid)
        assert len(children) == 2
        for pid in children:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert password.encode() not in command_line and key.encode() not in command_line
        assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=20).status_code == 200
        admin = redis.Redis.from_url(url)
        try:
            plain = b"M" + msgpack.packb({"v": 1, "t": "connect"})
            admin.rpush(f"{prefix}:q:app", b"%013d" % (time.time() * 1000) + b"app\n" + plain)
        finally:
            admin.close()
        _wait_for_output(log, "unencrypted message where encryption is required", up)
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    output = log.read_text()
    assert "(with the same $DISTRIBUTED_ASGI_ENCRYPTION_KEYS)" in output
    assert password not in output and key not in output, output


# -- several servers, a cluster, a local server ------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        "rediss+cluster://:secret@node1:7000,[::1]:7001,node3:7002/0",
    ],
)
def test_multi_node_cluster_urls_are_accepted(url: str) -> None:
    assert check_redis_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://h1:7000,h2:port", "port must be a number, got 'port'"),
        ("redis+cluster://h1:7000,h2", "cluster node 'h2' is not host:port"),
        ("redis+cluster://h1:7000,h2:70000", "port must be between 1 and 65535"),
        ("redis+cluster://h1:7000/2", "a Redis Cluster has only database 0"),
    ],
)
def test_bad_cluster_url_names_it(url: str, reason: str) -> None:
    message = _error(["edge", "--route", "/=site", "--redis", url])
    assert message.startswith(f"Error: invalid Redis URL '{url}': ")
    assert reason in message


def test_several_redis_urls_are_checked_together() -> None:
    twice = ["--redis", "redis://h:6379/0", "--redis", "redis://h:6379/0"]
    assert "the same server twice" in _error(["worker", "json:dumps", "--key", "a", *twice])
    mixed = ["--redis", "redis://h:6379/0", "--redis", "redis+cluster://c:7000"]
    assert "must be the only entry" in _error(["edge", "--route", "/=a", *mixed])
    bad_second = ["--redis", "redis://h:6379/0", "--redis", "redis://h:x/0"]
    assert _error(["edge", "--route", "/=a", *bad_second]).startswith(
        "Error: invalid Redis URL 'redis://h:x/0'"
    )


def test_bad_local_redis_url_names_it() -> None:
    args = ["edge", "--route", "/=a", "--redis", "redis://h:6379/0"]
    assert _error([*args, "--local-redis", "http://x"]).startswith(
        "Error: invalid --local-redis: invalid Redis URL 'http://x'"
    )
    assert _error([*args, "--local-redis", "redis://h:6379/0"]) == (
        "Error: invalid --local-redis: 'redis://h:6379/0' is also a --redis server"
    )


def _serve_one_request(tmp_path: Path, layer_args: list[str], keys: Sequence[str] = ()) -> None:
    """An edge and a worker started with ``layer_args``; one request per key (or to ``site``)
    answered by the app."""
    (tmp_path / "seed_worker_app.py").write_text(SEED_APP)
    port = free_port()
    cli = [sys.executable, "-m", "distributed_asgi"]
    common = [*layer_args, "--log-level", "warning"]
    keys = list(keys) or ["site"]
    app = ["seed_worker_app:ASGIApp", "--app-dir", str(tmp_path)]
    app += [arg for key in keys for arg in ("--key", key)]
    worker = subprocess.Popen([*cli, "worker", *app, *common])
    route = r"/([a-z0-9]+)=\1"
    edge = subprocess.Popen([*cli, "edge", "--route", route, "--port", str(port), *common])
    try:
        for key in keys:
            response = _get_once_serving(f"http://127.0.0.1:{port}/{key}", edge)
            assert response.status_code == 200
            assert response.text == "Hello World!"
    finally:
        _stop_cleanly(edge, worker)


def _calls(url: str, command: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    finally:
        client.close()


def _commands_run(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(int(stats["calls"]) for stats in client.info("commandstats").values())
    finally:
        client.close()


def test_edge_and_worker_over_three_servers(
    tmp_path: Path, redis_factory: Callable[..., Any], prefix: str
) -> None:
    from distributed_asgi.layers import RedisChannelLayer

    servers = [redis_factory() for _ in range(3)]
    urls = [server.url for server in servers]
    # One route key placed on each server by the layer's hash ring.
    ring = RedisChannelLayer(hosts=urls).ring
    keys: dict[int, str] = {}
    for n in range(1000):
        keys.setdefault(ring.shard_for(f"k{n}"), f"k{n}")
    assert len(keys) == 3
    layer = ["--prefix", prefix, *(arg for url in urls for arg in ("--redis", url))]
    _serve_one_request(tmp_path, layer, [keys[i] for i in range(3)])
    # The worker waits on each route channel (BLMOVE) where its queue is: on every server, so
    # both processes used all three --redis servers.
    assert all(_calls(url, "blmove") > 0 for url in urls), [_calls(u, "blmove") for u in urls]
    assert all(_calls(url, "rpush") > 0 for url in urls)  # and sent its connect there


def test_edge_and_worker_on_a_cluster_given_by_two_nodes(
    tmp_path: Path, redis_cluster: Any, prefix: str
) -> None:
    first, second = redis_cluster.ports[:2]
    url = f"redis+cluster://127.0.0.1:{first},127.0.0.1:{second}"
    _serve_one_request(tmp_path, ["--redis", url, "--prefix", prefix])


def test_local_redis_carries_the_route_channel(
    tmp_path: Path, redis_url: str, redis_factory: Callable[..., Any], prefix: str
) -> None:
    local = redis_factory(unix_socket=True)
    central_before = _commands_run(redis_url)
    layer = ["--redis", redis_url, "--local-redis", local.unix_url, "--prefix", prefix]
    _serve_one_request(tmp_path, layer)
    # The route channel's queue (the worker waits on it with BLMOVE) is on the local server.
    assert _calls(local.unix_url, "blmove") > 0
    assert _commands_run(redis_url) > central_before  # replies still go centrally
