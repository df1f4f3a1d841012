"""edge/retry.py's rules, as pure logic; the real thing (SIGKILLed Nodes) is in
tests/gateway/test_retries.py."""

from __future__ import annotations

from typing import Any

import pytest

from distributed_asgi import Distributor
from distributed_asgi.edge.retry import may_retry
from distributed_asgi.edge.settings import EdgeSettings
from distributed_asgi.layers import InMemoryChannelLayer

GET: dict[str, Any] = {"type": "http", "method": "GET", "path": "/"}
SAFE: dict[str, Any] = {
    "retried": 0,
    "whole": True,
    "response_started": False,
    "client_gone": False,
}


def test_a_safe_request_may_go_to_another_node() -> None:
    assert may_retry(EdgeSettings(), GET, **SAFE)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"retried": 1}, "its one retry is used up"),
        ({"whole": False}, "its body was still coming"),
        ({"response_started": True}, "the client has part of a response"),
        ({"client_gone": True}, "nobody would read the answer"),
    ],
)
def test_a_request_is_not_retried_when(change: dict[str, Any], why: str) -> None:
    assert not may_retry(EdgeSettings(), GET, **{**SAFE, **change}), why


def test_unsafe_methods_and_websockets_are_not_retried() -> None:
    settings = EdgeSettings()
    assert not may_retry(settings, {**GET, "method": "POST"}, **SAFE)
    assert not may_retry(settings, {"type": "websocket", "path": "/"}, **SAFE)
    assert may_retry(EdgeSettings(retry_methods=["POST"]), {**GET, "method": "POST"}, **SAFE)
    assert not may_retry(EdgeSettings(retries=0), GET, **SAFE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
        ({"retries": 1.5}, "retries must be a whole number >= 0, got 1.5"),
        ({"retries": True}, "retries must be a whole number >= 0, got True"),
        ({"retry_methods": "GET"}, "retry_methods must be a collection of method names"),
        ({"retry_methods": ["GET", "GET /"]}, "retry_methods: 'GET /' is not an HTTP method"),
        ({"retry_methods": [1]}, "retry_methods: 1 is not an HTTP method"),
    ],
)
def test_bad_retry_options_fail_at_start_naming_the_value(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Distributor(InMemoryChannelLayer(), {"/": "site"}, **options)
