"""Every Redis key the layer writes and the queue entry header, in one place.

Rules of this file (``P`` is the layer's prefix, ``T`` the placement's hash tag: empty on plain
servers, ``{B}`` on a Redis Cluster, B the bucket of the routing name, see placement.py):

- ``P:q:TNAME`` list, the queue of a normal channel (NAME is the channel) or of one process's
  inbox (NAME is the non-local part ``specific.abc!`` that all its channels share).
- ``P:n:TNAME`` hash, channel -> messages sent to it and not yet received (in the inbox, or
  popped into its process but not yet returned by ``receive()``), so capacity is exact per
  process-specific channel although they share one list.
- ``P:g:TGROUP`` sorted set, member channel -> time of its last ``group_add``.
- ``P:gc:TGROUP`` hash, member channel -> its capacity, so ``group_send`` needs no round trip
  to learn members first.
- ``P:gi:TGROUP`` (cluster only) sorted set, bucket -> time of its last ``group_add``: the
  buckets a group has members in.
- ``P:node:TID`` a Node's presence (node/presence.py).
- A queue entry is ``TTTTTTTTTTTTT`` (13-digit send time in ms) + channel + ``\\n`` +
  payload. The time lets any reader drop expired entries (against the Redis server's clock);
  the channel lets one inbox serve many process-specific channels. The time is the server's:
  a script reads ``TIME``, and plain pushes use the layer's estimate of it (clock.py), so no
  client clock matters.
- An entry of ``push()`` (an *uncounted* entry: it took no capacity, so its receipt is not
  acked) has ``UNCOUNTED`` (``~``, which no channel name contains) between the time and the
  channel.
- The Lua scripts write and read the same header (scripts.py formats ``TIME_DIGITS`` and
  ``UNCOUNTED`` into them).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TIME_DIGITS",
    "UNCOUNTED",
    "KeySpace",
    "entry",
    "entry_channel",
    "entry_counted",
    "entry_payload",
    "entry_sent",
    "hash_tag",
]

QUEUE = "q"
COUNTERS = "n"
GROUP = "g"
GROUP_CAPACITIES = "gc"
GROUP_INDEX = "gi"
NODE = "node"
CLAIM = "c"  # who decides a connection no accept came for in time (layer.claim())
RETRIES = "r"  # a route's count of requests the edges sent to another Node (edge/retry.py)

# Digits of the send time at the head of every queue entry (ms since the epoch: 13 digits
# until the year 2286).
TIME_DIGITS = 13
# Marks an entry that holds no capacity (``push()``): right after the time, where a counted
# entry's channel name starts (core/names.py: a name never contains it).
UNCOUNTED = "~"
_UNCOUNTED = UNCOUNTED.encode()
_UNCOUNTED_BYTE = _UNCOUNTED[0]


def hash_tag(bucket: int) -> str:
    """The hash tag that puts a key in ``bucket``'s slot on a Redis Cluster."""
    return f"{{{bucket}}}"


@dataclass(frozen=True)
class KeySpace:
    """The keys of one layer prefix."""

    prefix: str

    def key(self, kind: str, name: str, tag: str = "") -> str:
        return f"{self.prefix}:{kind}:{tag}{name}"

    def queue(self, name: str, tag: str = "") -> str:
        return f"{self.prefix}:q:{tag}{name}"

    def counters(self, name: str, tag: str = "") -> str:
        return f"{self.prefix}:n:{tag}{name}"

    def group(self, group: str, tag: str = "") -> list[str]:
        """[member set, member capacities] of ``group``."""
        return [f"{self.prefix}:g:{tag}{group}", f"{self.prefix}:gc:{tag}{group}"]

    def group_index(self, group: str, tag: str) -> str:
        return f"{self.prefix}:gi:{tag}{group}"

    def node(self, node_id: str, tag: str = "") -> str:
        return f"{self.prefix}:node:{tag}{node_id}"

    def all(self) -> str:
        """SCAN pattern of every key of this prefix."""
        return f"{self.prefix}:*"

    def pattern(self, kind: str) -> str:
        """SCAN pattern of every key of one kind (``QUEUE``, ``NODE``...)."""
        return f"{self.prefix}:{kind}:*"

    def name_of(self, kind: str, key: str) -> str | None:
        """The name in a key of ``kind`` (its hash tag removed); None for another key."""
        head = f"{self.prefix}:{kind}:"
        if not key.startswith(head):
            return None
        name = key[len(head) :]
        if name.startswith("{"):
            close = name.find("}")
            if close > 0:
                name = name[close + 1 :]
        return name


def entry(sent_ms: int, channel: str, payload: bytes, *, counted: bool = True) -> bytes:
    """A queue entry as the layer writes it: ``push()``'s with ``counted=False``, ``send()``'s
    otherwise (its script writes the same for a process-specific channel)."""
    mark = b"" if counted else _UNCOUNTED
    # One format, one copy of the payload (each + would copy it again).
    return b"%0*d%b%b\n%b" % (TIME_DIGITS, sent_ms, mark, channel.encode(), payload)


def entry_sent(entry: bytes) -> int | None:
    """The send time of an entry in ms; None for bytes that are not an entry."""
    sent = entry[:TIME_DIGITS]
    if not sent.isdigit() or entry.find(b"\n", TIME_DIGITS) < 0:
        return None
    return int(sent)


def entry_counted(entry: bytes) -> bool:
    """Whether the entry holds capacity until it is received (``send()``'s, not ``push()``'s)."""
    return len(entry) <= TIME_DIGITS or entry[TIME_DIGITS] != _UNCOUNTED_BYTE


def entry_channel(entry: bytes) -> str:
    start = TIME_DIGITS if entry_counted(entry) else TIME_DIGITS + 1
    return entry[start : entry.find(b"\n", TIME_DIGITS)].decode("utf-8", "replace")


def entry_payload(entry: bytes) -> bytes:
    return entry[entry.find(b"\n", TIME_DIGITS) + 1 :]
