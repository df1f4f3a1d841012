"""``LayerOptions``: the options every layer shares, validated once.

The Redis, local+central and in-memory layers take these same keyword arguments (Django's
``CHANNEL_LAYERS`` ``"CONFIG"`` passes them); each constructor hands them to ``LayerOptions``,
which holds the defaults (the constructors' signatures show them as ``LayerOptions.expiry``
and so on), checks every value (validate.py) and derives what the layers use: the capacity
rules, the serializer and the expiries in milliseconds for the scripts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .base import CapacityRules
from .serialization import DEFAULT_MAX_MESSAGE_SIZE, MessageSerializer
from .validate import require_prefix, require_seconds

__all__ = ["LayerOptions"]


@dataclass(frozen=True, eq=False)
class LayerOptions:
    """The shared layer options; see docs/configuration.md for each."""

    prefix: str = "asgi"
    expiry: float = 60
    group_expiry: float = 86400
    capacity: int = 100
    channel_capacity: Mapping[str | re.Pattern[str], int] | None = None
    symmetric_encryption_keys: Sequence[str | bytes] | None = None
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    # Derived, once: per-channel capacities, the message codec, expiries in ms.
    capacities: CapacityRules = field(init=False, repr=False)
    serializer: MessageSerializer = field(init=False, repr=False)
    expiry_ms: int = field(init=False, repr=False)
    group_expiry_ms: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        require_prefix("prefix", self.prefix)
        derived = {
            "expiry": require_seconds("expiry", self.expiry),
            "group_expiry": require_seconds("group_expiry", self.group_expiry),
            "capacities": CapacityRules(self.capacity, self.channel_capacity),
            "serializer": MessageSerializer(self.symmetric_encryption_keys, self.max_message_size),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "expiry_ms", int(self.expiry * 1000))
        object.__setattr__(self, "group_expiry_ms", int(self.group_expiry * 1000))
