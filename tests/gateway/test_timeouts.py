"""The edge's HTTP timeouts: first byte and total (504), and what the application hears."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import Gateway


def test_no_first_byte_in_time_is_504_and_the_app_hears_a_disconnect(gateway: Gateway) -> None:
    gateway.start_edge(first_byte_timeout=0.6)
    gateway.start_node()
    started = time.monotonic()
    response = httpx.get(gateway.url("/slow"), params={"sleep": 30, "marker": "fb"}, timeout=20)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.text == "Gateway Timeout"
    assert 0.5 < elapsed < 5
    assert gateway.wait_marker("fb") == "http.disconnect"
    # A request that answers in time is untouched by the timeout.
    response = httpx.get(gateway.url("/slow"), params={"sleep": 0.1, "marker": "ok"}, timeout=20)
    assert response.text == "slow answer"


def test_response_not_complete_in_total_time_closes_the_connection(gateway: Gateway) -> None:
    gateway.start_edge(total_timeout=1.0)
    gateway.start_node()
    received = 0
    started = time.monotonic()
    url = gateway.url("/endless")
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", url, params={"marker": "tt"}, timeout=20) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += len(chunk)
    assert received > 0  # it was streaming until the limit
    assert 0.9 < time.monotonic() - started < 6
    assert gateway.wait_marker("tt") == "http.disconnect"


def test_total_timeout_before_the_response_started_is_504(gateway: Gateway) -> None:
    gateway.start_edge(total_timeout=0.6, first_byte_timeout=None)
    gateway.start_node()
    response = httpx.get(gateway.url("/slow"), params={"sleep": 30, "marker": "t5"}, timeout=20)
    assert response.status_code == 504
    assert gateway.wait_marker("t5") == "http.disconnect"
