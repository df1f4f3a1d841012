"""Prometheus metrics of the edge and of a Node (prometheus-client), served on a port of their own.

Off unless asked: ``Distributor(metrics=edge_metrics())`` / ``Node(metrics=node_metrics())``,
which the CLI does for ``--metrics-port``. Off costs one ``is None`` test per connection; on,
a connection costs one counter increment, two or three histogram observations and two gauge
changes, on label children cached here (``labels()`` takes a lock and builds a tuple each call).

Names (all prefixed ``distributed_asgi_``):

- edge: ``edge_requests_total{key,status,outcome}`` (outcome: ``core.outcomes.Outcome``'s
  values: served, retried (served by another Node after the first was lost), error, no_route,
  no_worker, capacity, redis_down, timeout, node_lost, too_large, client_gone),
  ``edge_retries_total{key}`` (requests sent to another Node after their Node was lost),
  ``edge_pickup_wait_seconds{key}`` (connect sent -> a Node's accept),
  ``edge_request_seconds{key}`` (arrival -> the edge is done with the connection),
  ``edge_in_flight``.
- Node: ``node_requests_total{key,outcome}`` (``NodeOutcome``: served, error),
  ``node_request_seconds{key}``, ``node_in_flight``, ``node_late_total{key}`` (connect
  frames dropped: deadline passed).
- both: ``redis_outages_total{server}`` and ``redis_reconnects_total{server}``, counted where
  the layer logs an outage's start and end (layers/shard.py).

The registry is prometheus-client's default one, so the process and GC collectors come along;
the metric objects are created once per process (the registry refuses duplicates).
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from distributed_asgi.core.outcomes import NodeOutcome, Outcome
from distributed_asgi.layers import shard

__all__ = ["EdgeMetrics", "NodeMetrics", "edge_metrics", "node_metrics", "serve_metrics"]

# Latencies from a fast local request (~1 ms) to the edge's default total timeout (300 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 300)
PICKUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

_lock = threading.Lock()
_instances: dict[type[Any], Any] = {}
_redis_hooked = False


class EdgeMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "distributed_asgi_edge_requests",
            "Connections the edge finished, by route key, status answered and outcome.",
            ["key", "status", "outcome"],
        )
        self.pickup = Histogram(
            "distributed_asgi_edge_pickup_wait_seconds",
            "From the connect frame's send to a Node's accept.",
            ["key"],
            buckets=PICKUP_BUCKETS,
        )
        self.latency = Histogram(
            "distributed_asgi_edge_request_seconds",
            "From a connection's arrival until the edge is done with it.",
            ["key"],
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge("distributed_asgi_edge_in_flight", "Connections at the edge now.")
        self.retries = Counter(
            "distributed_asgi_edge_retries",
            "Requests sent to another Node after their Node was lost, by route key.",
            ["key"],
        )
        self._children: dict[tuple[str, str, str], Any] = {}
        self._pickups: dict[str, Any] = {}
        self._latencies: dict[str, Any] = {}

    def connection_started(self) -> None:
        self.in_flight.inc()

    def connection_ended(self) -> None:
        self.in_flight.dec()

    def finished(
        self, key: str, status: int | None, outcome: Outcome, seconds: float, pickup: float | None
    ) -> None:
        label = (key, str(status) if status is not None else "none", outcome.value)
        _child(self._children, label, self.requests, *label).inc()
        _child(self._latencies, key, self.latency, key).observe(seconds)
        if pickup is not None:
            _child(self._pickups, key, self.pickup, key).observe(pickup)

    def retried(self, key: str) -> None:
        self.retries.labels(key).inc()


class NodeMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "distributed_asgi_node_requests",
            "Connections this Node finished, by route key and outcome (served, error).",
            ["key", "outcome"],
        )
        self.latency = Histogram(
            "distributed_asgi_node_request_seconds",
            "From taking a connection to the application's end.",
            ["key"],
            buckets=LATENCY_BUCKETS,
        )
        self.late = Counter(
            "distributed_asgi_node_late",
            "Connect frames dropped because their pick-up deadline had passed.",
            ["key"],
        )
        self.in_flight = Gauge("distributed_asgi_node_in_flight", "Connections served now.")
        self._children: dict[tuple[str, str], Any] = {}
        self._latencies: dict[str, Any] = {}
        self._late: dict[str, Any] = {}

    def connection_started(self) -> None:
        self.in_flight.inc()

    def connection_ended(self) -> None:
        self.in_flight.dec()

    def dropped_late(self, key: str) -> None:
        _child(self._late, key, self.late, key).inc()

    def finished(self, key: str, failed: bool, seconds: float) -> None:
        label = (key, (NodeOutcome.ERROR if failed else NodeOutcome.SERVED).value)
        _child(self._children, label, self.requests, *label).inc()
        _child(self._latencies, key, self.latency, key).observe(seconds)


def _child(children: dict[Any, Any], key: Any, metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, made on the first use of ``key`` and then taken from
    ``children``."""
    child = children.get(key)
    if child is None:
        child = children[key] = metric.labels(*labels)
    return child


_M = TypeVar("_M", "EdgeMetrics", "NodeMetrics")


def edge_metrics() -> EdgeMetrics:
    """This process's edge metrics (created and registered on first use)."""
    return _once(EdgeMetrics)


def node_metrics() -> NodeMetrics:
    """This process's Node metrics (created and registered on first use)."""
    return _once(NodeMetrics)


def _once(kind: type[_M]) -> _M:
    # One instance per class and process: the registry refuses a metric name twice.
    with _lock:
        instance = _instances.get(kind)
        if instance is None:
            instance = _instances[kind] = kind()
        _hook_redis()
        return cast(_M, instance)


def _hook_redis() -> None:
    global _redis_hooked
    if _redis_hooked:
        return
    outages = Counter(
        "distributed_asgi_redis_outages",
        "Times a Redis server became unreachable (as logged by the layer).",
        ["server"],
    )
    reconnects = Counter(
        "distributed_asgi_redis_reconnects",
        "Times a Redis server became reachable again after an outage.",
        ["server"],
    )

    def on_health(server: str, up: bool) -> None:
        (reconnects if up else outages).labels(server).inc()

    shard.HEALTH_HOOKS.append(on_health)
    _redis_hooked = True


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (prometheus-client's server)."""
    start_http_server(port, addr=host)
