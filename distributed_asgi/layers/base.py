"""What every channel layer here shares: name rules, capacity rules and ``ChannelFull``.

The rules are Django Channels' (``channels.layers.BaseChannelLayer``), so a project can swap
layers without its names or capacities changing meaning.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from distributed_asgi.core.names import (
    MAX_NAME_LENGTH,
    require_valid_channel_name,
    require_valid_group_name,
    valid_after_inbox,
)
from distributed_asgi.core.types import Message

from .validate import require_capacity

__all__ = [
    "MAX_NAME_LENGTH",
    "CapacityRules",
    "ChannelFull",
    "ClaimingLayer",
    "GatewayLayer",
    "Message",
    "WrongClientPrefix",
    "claiming",
    "non_local_name",
    "require_own_channel",
    "require_process_channel",
    "require_valid_channel_name",
    "require_valid_group_name",
    "require_valid_message",
    "valid_after_inbox",
]


if TYPE_CHECKING:
    _ChannelFullBase = Exception
else:
    try:  # With Django Channels installed, `except channels.exceptions.ChannelFull` catches ours.
        from channels.exceptions import ChannelFull as _ChannelFullBase
    except ImportError:  # pragma: no cover - depends on the environment
        _ChannelFullBase = Exception


class ChannelFull(_ChannelFullBase):
    """The channel already holds ``capacity`` messages; nothing was sent."""


class WrongClientPrefix(AssertionError):
    """``receive()`` of a process-specific channel that another layer instance made.

    Its messages wait in that instance's inbox, which only that instance may read: taking them
    here would steal them from their receiver. An ``AssertionError``, as channels_redis raises
    ("Wrong client prefix"), but raised explicitly, so ``python -O`` keeps the check.
    """


class GatewayLayer(Protocol):
    """What the edge (``Distributor``) and the ``Node`` use of a channel layer, and no more.

    A structural type, so every layer here (``RedisChannelLayer``, ``RedisLocalChannelLayer``,
    ``RedisClusterChannelLayer``, ``InMemoryChannelLayer``) and a user's own type-check as the
    gateway's ``layer=`` without inheriting anything.

    Errors the gateway reacts to (``distributed_asgi.layers.errors``), the only ones besides
    ``TypeError``/``ValueError`` of bad arguments and ``WrongClientPrefix``: ``send`` raises
    ``ChannelFull`` at capacity, ``LayerUnavailable`` when the server cannot be reached or does
    not answer in time, ``LayerRefused`` when it refuses the write; ``receive`` may raise the
    same two, or wait an outage out (the Redis layers do). Before a Node took a connection, the
    edge refuses it with ``Retry-After``: ``no_worker_status`` for a full route channel, 503
    for the other two.
    """

    async def send(self, channel: str, message: Message) -> None: ...

    async def push(self, channel: str, message: Message) -> None:
        """Send to a process-specific channel without capacity (for traffic flow-controlled
        end to end): never ``ChannelFull``; ``LayerUnavailable``/``LayerRefused`` as ``send``;
        ``ValueError`` for a normal channel. Lands in call order with this process's sends."""
        ...

    async def receive(self, channel: str) -> Message: ...

    async def new_channel(self, prefix: str = "specific") -> str: ...

    async def close(self) -> None: ...


@runtime_checkable
class ClaimingLayer(GatewayLayer, Protocol):
    """A gateway layer that can also say who decides a connection (every layer here can).

    With one, a Node tells the edge it took a connection with its first response frame
    instead of a frame of its own, and an edge that heard nothing by the pick-up timeout
    claims the connection itself before answering 503 (docs/PROTOCOL.md). A layer without
    ``claim`` serves as before: an accept frame before the application runs.
    """

    async def claim(self, channel: str, holder: str, ttl: float) -> str | None:
        """Claim the process-specific ``channel`` for ``holder`` for ``ttl`` seconds: None when
        this call got it, else the value of whoever holds it ("" if unknown)."""
        ...

    async def holder(self, channel: str) -> str | None:
        """The value of the claim on ``channel``; None while nobody holds it."""
        ...


def claiming(layer: object) -> ClaimingLayer | None:
    """``layer`` if it can claim, else None. Asked once per process: an ``isinstance`` of a
    runtime protocol costs about 10 µs."""
    return layer if isinstance(layer, ClaimingLayer) else None


def require_valid_message(message: object) -> Message:
    if not isinstance(message, dict):
        raise TypeError(f"message must be a dict, not {type(message).__name__}")
    return message


def non_local_name(channel: str) -> str:
    """The part of a process-specific channel that names the process, ``!`` included.

    ``specific.abc!xyz`` -> ``specific.abc!``. Sender and receiver both shard and key on this,
    so a message always lands where its receiver pops (channels_redis hashes the full name on
    send and this part on receive, which strands messages when there are several hosts).
    """
    bang = channel.find("!")
    return channel if bang < 0 else channel[: bang + 1]


def require_process_channel(channel: str, operation: Literal["push", "claim"]) -> str:
    """``channel`` if it is process-specific (has a ``!``), as ``operation`` requires;
    ``ValueError`` naming both otherwise."""
    if "!" not in channel:
        advice = ": a normal channel keeps its capacity, use send()" if operation == "push" else ""
        raise ValueError(
            f"{operation}() is for process-specific channels (new_channel() names), "
            f"not {channel!r}{advice}"
        )
    return channel


def require_own_channel(channel: str, client_prefix: str) -> str:
    """``channel`` if it is a normal channel or one of this instance's ``new_channel()`` names
    (``<prefix>.<client_prefix>!<suffix>``); ``WrongClientPrefix`` otherwise."""
    bang = channel.find("!")
    if bang < 0:
        return channel
    process = channel[:bang]
    if not process.endswith("." + client_prefix):
        raise WrongClientPrefix(
            f"Wrong client prefix: {channel!r} is not a channel of this layer instance (its "
            f"process part {process!r} does not end with this instance's client prefix "
            f"'.{client_prefix}'); receive() only the names this instance's new_channel() made"
        )
    return channel


class CapacityRules:
    """Default capacity plus ``channel_capacity`` overrides, first match wins.

    Keys are glob strings (``"http.response!*"``) or compiled regexes, as asgi_redis documents.
    """

    def __init__(
        self, default: int, overrides: Mapping[str | re.Pattern[str], int] | None = None
    ) -> None:
        self.default = require_capacity("capacity", default)
        self.rules: list[tuple[re.Pattern[str], int]] = []
        for pattern, capacity in (overrides or {}).items():
            if isinstance(pattern, re.Pattern):
                compiled = pattern
            elif isinstance(pattern, str):
                compiled = re.compile(fnmatch.translate(pattern))
            else:
                raise TypeError(
                    "channel_capacity keys must be glob strings or compiled regexes, "
                    f"got {pattern!r}"
                )
            self.rules.append(
                (compiled, require_capacity(f"channel_capacity[{pattern!r}]", capacity))
            )
        self._cache: dict[str, int] = {}

    def for_channel(self, channel: str) -> int:
        cached = self._cache.get(channel)
        if cached is not None:
            return cached
        capacity = self.default
        for pattern, value in self.rules:
            if pattern.match(channel):
                capacity = value
                break
        if len(self._cache) < 10_000:
            self._cache[channel] = capacity
        return capacity
