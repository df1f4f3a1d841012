"""What one edge connection needs from its ``Distributor``: frozen settings and a registry."""

from __future__ import annotations

import http
import math
import re
from collections.abc import Awaitable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from distributed_asgi.core.outcomes import HTTPTimeout
from distributed_asgi.layers.validate import require_capacity, require_seconds

if TYPE_CHECKING:
    from distributed_asgi.edge.connection import EdgeConnection
    from distributed_asgi.layers import ClaimingLayer

__all__ = ["DEFAULT_RETRY_METHODS", "ConnectionRegistry", "EdgeSettings"]

# Methods RFC 9110 calls safe: repeating one changes nothing on the server.
DEFAULT_RETRY_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class EdgeSettings:
    """The edge's limits and answers, validated once (the ``Distributor``'s options)."""

    pickup_timeout: float = 5.0
    first_byte_timeout: float | None = 60.0
    total_timeout: float | None = 300.0
    no_worker_status: int = 503
    retry_after: int = 1
    max_body_size: int = 100 * 1024 * 1024
    heartbeat_interval: float = 2.0
    heartbeat_misses: int = 3
    retries: int = 1
    retry_methods: Collection[str] = field(default=DEFAULT_RETRY_METHODS)

    def __post_init__(self) -> None:
        require_seconds("pickup_timeout", self.pickup_timeout)
        _optional_positive("first_byte_timeout", self.first_byte_timeout)
        _optional_positive("total_timeout", self.total_timeout)
        status = self.no_worker_status
        if status not in {s.value for s in http.HTTPStatus} or status < 400:
            raise ValueError(f"no_worker_status must be an HTTP error status, got {status!r}")
        retry = self.retry_after
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"retry_after must be a whole number of seconds, got {retry!r}")
        size = self.max_body_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"max_body_size must be a number of bytes, got {size!r}")
        require_seconds("heartbeat_interval", self.heartbeat_interval)
        require_capacity("heartbeat_misses", self.heartbeat_misses)
        retries = self.retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        object.__setattr__(self, "retry_methods", _methods(self.retry_methods))
        # Whole numbers of seconds given as int stay exact; store every duration as a float.
        for name in ("pickup_timeout", "heartbeat_interval"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("first_byte_timeout", "total_timeout"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    def limit(self, which: HTTPTimeout) -> float | None:
        if which is HTTPTimeout.TOTAL:
            return self.total_timeout
        return self.first_byte_timeout

    def next_deadline(
        self, window: float, elapsed: float, started: bool
    ) -> tuple[float, HTTPTimeout | None]:
        """How long an HTTP connection ``elapsed`` seconds old waits for the Node's next frame,
        and which timeout (if any) ends that wait rather than the heartbeat ``window``."""
        timeout: float = window
        expired: HTTPTimeout | None = None
        names = (HTTPTimeout.TOTAL,) if started else (HTTPTimeout.TOTAL, HTTPTimeout.FIRST_BYTE)
        for name in names:
            limit = self.limit(name)
            if limit is not None and limit - elapsed <= timeout:
                timeout, expired = max(0.0, limit - elapsed), name
        return timeout, expired

    @property
    def window(self) -> float:
        """How long the edge's own heartbeats let a peer wait before giving up on it."""
        return self.heartbeat_interval * self.heartbeat_misses


class ConnectionRegistry(Protocol):
    """What a connection asks of the edge that runs it: the edge's liveness channel (for the
    connect), to have its Node watched while it is pinned to it (``register``; ``heard`` for
    each frame from it), and to run a last message to the Node after it has returned."""

    # The layer when it can claim connections (core/claims.py), else None.
    claims: ClaimingLayer | None

    async def peer_channel(self) -> str: ...

    def holding(self, conn_id: str) -> int:
        """List ``conn_id`` to every Node until it is registered or released; the edge's
        alive round now (for the connect)."""

    def release(self, conn_id: str) -> None: ...

    def register(self, connection: EdgeConnection) -> None: ...

    def heard(self, key: str) -> None: ...

    def unregister(self, connection: EdgeConnection) -> None: ...

    def retried(self, key: str) -> None:
        """A request of route ``key`` goes to another Node after its Node was lost."""

    def spawn(self, coroutine: Awaitable[Any]) -> None: ...


def _methods(methods: object) -> frozenset[str]:
    """HTTP method names as given (tokens, case kept: methods are case-sensitive)."""
    if isinstance(methods, str) or not hasattr(methods, "__iter__"):
        raise ValueError(f"retry_methods must be a collection of method names, got {methods!r}")
    names = frozenset(methods)
    for name in names:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"retry_methods: {name!r} is not an HTTP method name")
    return names


# An HTTP method is a token (RFC 9110, section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _optional_positive(what: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a positive number of seconds or None, got {value!r}")
