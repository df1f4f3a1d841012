"""Edge and worker logs through the real command line: JSON lines, text lines with level and time,
the start-up configuration with secrets masked, Node joined/left, the 503 warning."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from distributed_asgi.ops.redis_process import free_port
from tests.gateway.cli_processes import CliProcesses

FIELDS = {"time", "level", "logger", "message"}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[CliProcesses]:
    running = CliProcesses(tmp_path)
    yield running
    running.stop()


def json_lines(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)  # every line, not only ours: uvicorn's too
        assert isinstance(entry, dict), line
        assert entry.keys() >= FIELDS, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), line
        entries.append(entry)
    return entries


def test_json_logs_every_line_parses_with_the_fields(
    processes: CliProcesses, redis_url: str, prefix: str
) -> None:
    key = secrets.token_urlsafe(32)
    env = {"DISTRIBUTED_ASGI_ENCRYPTION_KEYS": key}
    port = free_port()
    layer = ["--redis", redis_url, "--prefix", prefix, "--log-format", "json"]
    processes.start(
        "worker",
        ["worker", "tests.gateway.apps.fidelity:app", "--key", "fidelity", *layer],
        env,
    )
    processes.wait_for("worker", lambda text: "Node listening" in text)
    processes.start(
        "edge",
        [
            *("edge", "--route", "^/nobody=nobody", "--route", "^/=fidelity"),
            *("--port", str(port), "--pickup-timeout", "0.5", *layer),
        ],
        env,
    )
    processes.wait_for_port("edge", port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        assert client.get("/hello").status_code == 200
        assert client.get("/nobody").status_code == 503
    processes.stop()

    edge, worker = processes.text("edge"), processes.text("worker")
    assert key not in edge and key not in worker
    edge_entries, worker_entries = json_lines(edge), json_lines(worker)

    (start,) = [e for e in edge_entries if e["message"].startswith("edge starting:")]
    assert start["logger"] == "distributed_asgi.distributor"
    assert start["config"]["prefix"] == prefix
    assert start["config"]["encryption_keys"] == 1
    assert start["config"]["routes"] == ["^/nobody=nobody", "^/=fidelity"]
    (refused,) = [e for e in edge_entries if e["message"].startswith("no Node took")]
    assert refused["level"] == "WARNING"
    assert refused["logger"] == "distributed_asgi.distributor"
    assert "'nobody'" in refused["message"]
    # uvicorn's own lines come through the same handler.
    assert any(e["logger"] == "uvicorn.access" and "/hello" in e["message"] for e in edge_entries)
    assert any(e["logger"] == "uvicorn.error" for e in edge_entries)

    (start,) = [e for e in worker_entries if e["message"].startswith("worker starting:")]
    assert start["config"]["keys"] == ["fidelity"]
    (joined,) = [e for e in worker_entries if "joined as" in e["message"]]
    (left,) = [
        e for e in worker_entries if e["message"].startswith("Node ") and " left" in e["message"]
    ]
    assert joined["node_id"] == left["node_id"] == start["config"]["node_id"]
    assert left["served"] == 1


def test_text_logs_have_time_and_level(
    processes: CliProcesses, redis_url: str, prefix: str
) -> None:
    port = free_port()
    processes.start(
        "edge",
        [
            *("edge", "--route", "^/=nobody", "--port", str(port), "--pickup-timeout", "0.5"),
            *("--redis", redis_url, "--prefix", prefix),
        ],
    )
    processes.wait_for_port("edge", port)
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 503
    processes.stop()
    text = processes.text("edge")
    # Before: the distributor's loggers had no handler and this came out bare (lastResort).
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING +distributed_asgi\.distributor: "
        r"no Node took GET / on 'nobody'",
        text,
        re.MULTILINE,
    ), text
