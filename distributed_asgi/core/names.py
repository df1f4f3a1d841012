"""Channel and group name rules, shared by the wire frames, the route table and every layer.

The rules are Django Channels' (``channels.layers.BaseChannelLayer``), so a project can swap
layers without its names meaning something else. Standard library only.
"""

from __future__ import annotations

import itertools
import re
import secrets

__all__ = [
    "CHANNEL_NAME",
    "GROUP_NAME",
    "MAX_NAME_LENGTH",
    "ROUTE_KEY",
    "new_connection_id",
    "require_valid_channel_name",
    "require_valid_group_name",
    "valid_after_inbox",
]

# Channels 4: names are shorter than 100 characters.
MAX_NAME_LENGTH = 100
# A channel: a normal name, or a process-specific one (``name!suffix``).
CHANNEL_NAME = re.compile(r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$")
GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]+$")
# A normal (not process-specific) channel name, the only kind a route may produce.
ROUTE_KEY = GROUP_NAME


def _require_valid_name(kind: str, name: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, not {type(name).__name__}: {name!r}")
    if len(name) >= MAX_NAME_LENGTH:
        raise TypeError(
            f"{kind} name must be shorter than {MAX_NAME_LENGTH} characters, "
            f"got {len(name)}: {name[:40]!r}..."
        )
    if not pattern.match(name):
        raise TypeError(
            f"{kind} name must be ASCII letters, digits, hyphens, underscores or periods"
            + (" (and one '!' for process-specific channels)" if kind == "Channel" else "")
            + f", got {name!r}"
        )
    return name


def require_valid_channel_name(name: object) -> str:
    return _require_valid_name("Channel", name, CHANNEL_NAME)


def valid_after_inbox(name: str, bang: int) -> bool:
    """Whether ``name``, whose part up to its ``!`` (at ``bang``) is one that passed
    ``require_valid_channel_name`` before, is valid without the pattern: shorter than the
    limit, and the rest letters and digits (within what ``CHANNEL_NAME`` allows after ``!``),
    the case of every ``new_channel()`` name. False leaves it to the full check."""
    if len(name) >= MAX_NAME_LENGTH:
        return False
    suffix = name[bang + 1 :]
    return not suffix or suffix.isalnum()


def require_valid_group_name(name: object) -> str:
    return _require_valid_name("Group", name, GROUP_NAME)


# Connection ids only need to be unique (they name connections in frames and logs): a random
# per-process part and a counter, without a getrandom() call per connection.
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def new_connection_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"
