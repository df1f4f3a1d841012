"""One check per kind of layer option value, each with one error text naming the bad value.

Values are refused, never clamped: an option that cannot be honoured is a ``ValueError`` at
construction, with the option's name and the value given.
"""

from __future__ import annotations

import math

__all__ = ["require_capacity", "require_prefix", "require_seconds", "require_size"]


def require_seconds(what: str, value: object) -> float:
    """A positive, finite number of seconds (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def require_capacity(what: str, value: object) -> int:
    """A positive whole number of messages."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def require_size(what: str, value: object) -> int | None:
    """A positive number of bytes, or None for no limit."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what} must be a positive number of bytes or None, got {value!r}")
    return value


def require_prefix(what: str, value: object) -> str:
    """A key prefix: a non-empty string without whitespace."""
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be a non-empty string without spaces, got {value!r}")
    return value
