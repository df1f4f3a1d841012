"""The JSON log formatter and the status command's queue-name parsing, without servers."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from distributed_asgi.ops.logs import JSONFormatter, numeric_level, uvicorn_log_config
from distributed_asgi.ops.status import route_name


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "distributed_asgi.node", logging.WARNING, __file__, 1, message, args, None
    )
    made.__dict__.update(extra)
    return made


def test_json_line_has_the_fields_and_the_extras() -> None:
    line = JSONFormatter().format(record("dropped %s\nframe", "a", node_id="n1", keys=["x"]))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "distributed_asgi.node"
    assert entry["message"] == "dropped a\nframe"
    assert entry["node_id"] == "n1" and entry["keys"] == ["x"]
    assert entry["time"].endswith("Z")


def test_json_line_carries_the_exception_and_survives_odd_extras() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("failed", thing=object())
        made.exc_info = sys.exc_info()
    entry = json.loads(JSONFormatter().format(made))
    assert "ValueError: boom" in entry["exception"]
    assert entry["thing"].startswith("<object object")


def test_levels_and_formats_are_checked() -> None:
    assert numeric_level("trace") == 5
    assert numeric_level("warning") == logging.WARNING
    with pytest.raises(ValueError, match="log format"):
        uvicorn_log_config("info", "xml")


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (b"asgi:q:site", "site"),
        (b"asgi:q:{17}site", "site"),
        (b"asgi:q:specific.abc!", None),
        (b"asgi:q:{3}edge.abc!", None),
        (b"asgi:n:specific.abc!", None),
        (b"other:q:site", None),
    ],
)
def test_route_name(key: bytes, name: str | None) -> None:
    assert route_name(key, "asgi") == name
