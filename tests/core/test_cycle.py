"""The pure per-connection state: uvicorn's rules and error texts, the lifespan runner, the
edge's typed outcomes and its settings."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest

from distributed_asgi import Distributor, Node
from distributed_asgi.core.cycle import HTTPCycle, WebSocketCycle, cycle_for
from distributed_asgi.core.outcomes import HTTPTimeout, NodeOutcome, Outcome
from distributed_asgi.edge.settings import EdgeSettings
from distributed_asgi.layers import InMemoryChannelLayer
from distributed_asgi.node.lifespan import Lifespan, LifespanFailed


def exactly(text: str) -> str:
    return "^" + re.escape(text) + "$"


def test_http_cycle_flags_and_errors() -> None:
    cycle = HTTPCycle()
    with pytest.raises(
        RuntimeError,
        match=exactly("Expected ASGI message 'http.response.start', but got 'http.response.body'."),
    ):
        cycle.on_send({"type": "http.response.body"})
    cycle.on_send({"type": "http.response.start", "status": 200})
    assert cycle.response_started and not cycle.response_complete
    cycle.on_send({"type": "http.response.body", "body": b"a", "more_body": True})
    assert not cycle.finished
    with pytest.raises(
        RuntimeError,
        match=exactly("Expected ASGI message 'http.response.body', but got 'http.response.start'."),
    ):
        cycle.on_send({"type": "http.response.start", "status": 200})
    cycle.on_send({"type": "http.response.body"})
    assert cycle.finished
    with pytest.raises(
        RuntimeError,
        match=exactly(
            "Unexpected ASGI message 'http.response.body' sent, after response already completed."
        ),
    ):
        cycle.on_send({"type": "http.response.body"})
    cycle.on_receive({"type": "http.disconnect"})
    assert cycle.disconnected


def test_websocket_cycle() -> None:
    cycle = WebSocketCycle()
    with pytest.raises(
        RuntimeError,
        match=exactly(
            "Expected ASGI message 'websocket.accept', 'websocket.close' or "
            "'websocket.http.response.start' but got 'websocket.http.response.start'."
        ),
    ):
        cycle.on_send({"type": "websocket.http.response.start", "status": 403})
    cycle.on_send({"type": "websocket.accept"})
    cycle.on_send({"type": "websocket.send", "text": "x"})
    with pytest.raises(
        RuntimeError,
        match=exactly(
            "Expected ASGI message 'websocket.send' or 'websocket.close', "
            "but got 'websocket.accept'."
        ),
    ):
        cycle.on_send({"type": "websocket.accept"})
    cycle.on_send({"type": "websocket.close", "code": 4001})
    assert cycle.finished and cycle.close_code == 4001
    with pytest.raises(
        RuntimeError,
        match=exactly("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'."),
    ):
        cycle.on_send({"type": "websocket.send", "text": "x"})


def test_websocket_denial_response_only_when_offered() -> None:
    offered = cycle_for({"type": "websocket", "extensions": {"websocket.http.response": {}}})
    assert isinstance(offered, WebSocketCycle)
    offered.on_send({"type": "websocket.http.response.start", "status": 403})
    assert offered.started and not offered.finished
    offered.on_send({"type": "websocket.http.response.body", "body": b"no"})
    assert offered.finished


async def test_lifespan_startup_state_and_shutdown() -> None:
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    lifespan = Lifespan(app, "auto")
    await lifespan.startup()
    assert lifespan.state == {"db": "connected"}
    await lifespan.shutdown()
    assert events == ["lifespan.startup", "lifespan.shutdown"]


async def test_lifespan_auto_tolerates_apps_without_it() -> None:
    async def http_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    lifespan = Lifespan(http_only, "auto")
    await lifespan.startup()
    assert lifespan.unsupported
    await lifespan.shutdown()
    with pytest.raises(LifespanFailed):
        await Lifespan(http_only, "on").startup()


async def test_lifespan_startup_failed_is_fatal() -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailed, match="no database"):
        await Lifespan(failing, "auto").startup()


async def test_lifespan_off_never_calls_the_app() -> None:
    async def never(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise AssertionError("called")

    lifespan = Lifespan(never, "off")
    await lifespan.startup()
    await lifespan.shutdown()


# -- the edge's typed states and settings ----------------------------------------------------


def test_outcome_values_are_the_metric_labels_operations_md_lists() -> None:
    assert {o.value for o in Outcome} == {
        "served",
        "retried",
        "error",
        "no_route",
        "no_worker",
        "capacity",
        "redis_down",
        "timeout",
        "node_lost",
        "too_large",
        "client_gone",
    }
    assert {o.value for o in NodeOutcome} == {"served", "error"}
    # str-valued: a label built from a member is the documented text.
    assert f"{Outcome.CLIENT_GONE.value}" == "client_gone"


def test_the_http_deadline_names_the_timeout_that_ends_the_wait() -> None:
    settings = EdgeSettings(first_byte_timeout=10.0, total_timeout=30.0)
    # Early on, the heartbeat window is the nearer end.
    assert settings.next_deadline(6.0, elapsed=0.0, started=False) == (6.0, None)
    assert settings.next_deadline(6.0, elapsed=8.0, started=False) == (
        2.0,
        HTTPTimeout.FIRST_BYTE,
    )
    # Once the response started, only the total timeout counts.
    assert settings.next_deadline(6.0, elapsed=8.0, started=True) == (6.0, None)
    assert settings.next_deadline(6.0, elapsed=28.0, started=True) == (2.0, HTTPTimeout.TOTAL)
    assert settings.next_deadline(6.0, elapsed=40.0, started=True) == (0.0, HTTPTimeout.TOTAL)
    off = EdgeSettings(first_byte_timeout=None, total_timeout=None)
    assert off.next_deadline(6.0, elapsed=1e6, started=False) == (6.0, None)


def test_edge_settings_are_frozen() -> None:
    settings = EdgeSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.pickup_timeout = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("heartbeat_misses", 0, "heartbeat_misses must be a positive integer, got 0"),
        ("heartbeat_misses", True, "heartbeat_misses must be a positive integer, got True"),
        ("pickup_timeout", math.nan, "pickup_timeout must be a positive number of seconds"),
        ("total_timeout", math.inf, "total_timeout must be a positive number of seconds or None"),
        ("no_worker_status", 200, "no_worker_status must be an HTTP error status, got 200"),
    ],
)
def test_distributor_refuses_values_it_cannot_honour(option: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        options: dict[str, Any] = {option: value}
        Distributor(InMemoryChannelLayer(), {"/": "k"}, **options)


def test_node_refuses_zero_heartbeat_misses_rather_than_clamping_it() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None: ...

    with pytest.raises(
        ValueError, match=exactly("heartbeat_misses must be a positive integer, got 0")
    ):
        Node(app=app, key="k", layer=InMemoryChannelLayer(), heartbeat_misses=0)
