"""Named states shared by the gateway and its metrics, and what the gateway reports to the
metrics (``EdgeRecorder``, ``NodeRecorder``; ops/metrics.py implements both). Standard library
only.

The values are the metrics' label values (docs/operations.md lists them): renaming a member
is free, changing a value breaks dashboards.
"""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["EdgeRecorder", "HTTPTimeout", "NodeOutcome", "NodeRecorder", "Outcome"]


class Outcome(str, enum.Enum):
    """How the edge finished a connection (``edge_requests_total``'s ``outcome``)."""

    SERVED = "served"  # the Node's answer went through, whatever its status
    RETRIED = "retried"  # served by another Node after the first was lost (edge/retry.py)
    ERROR = "error"  # an exception escaped to the edge's server
    NO_ROUTE = "no_route"  # 404: no route matched the path
    NO_WORKER = "no_worker"  # no Node accepted within the pickup timeout
    CAPACITY = "capacity"  # the route channel was full, or the layer refused the connect
    REDIS_DOWN = "redis_down"  # the layer could not be reached or did not answer in time
    TIMEOUT = "timeout"  # first-byte or total timeout (HTTP)
    NODE_LOST = "node_lost"  # the Node fell silent for its heartbeat window
    TOO_LARGE = "too_large"  # 413: the request body was over the limit
    CLIENT_GONE = "client_gone"  # the client left before the application finished


class NodeOutcome(str, enum.Enum):
    """How a Node finished a connection (``node_requests_total``'s ``outcome``)."""

    SERVED = "served"
    ERROR = "error"  # the application raised


class HTTPTimeout(str, enum.Enum):
    """The edge's HTTP deadlines, counted from the request's arrival; the value is the name
    its log uses."""

    FIRST_BYTE = "first byte"
    TOTAL = "total"


class EdgeRecorder(Protocol):
    """What the edge reports about its connections."""

    def connection_started(self) -> None: ...

    def connection_ended(self) -> None: ...

    def finished(
        self, key: str, status: int | None, outcome: Outcome, seconds: float, pickup: float | None
    ) -> None:
        """A connection is done: route ``key`` ("" for none), the status answered, how, its
        time at the edge and its pick-up wait (None when no Node took it)."""

    def retried(self, key: str) -> None:
        """A request of route ``key`` went to another Node after its Node was lost."""


class NodeRecorder(Protocol):
    """What a Node reports about its connections."""

    def connection_started(self) -> None: ...

    def connection_ended(self) -> None: ...

    def finished(self, key: str, failed: bool, seconds: float) -> None: ...

    def dropped_late(self, key: str) -> None:
        """A connect frame from ``key`` was dropped: its pick-up deadline had passed."""
