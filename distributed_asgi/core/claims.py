"""The claim on a connection: who decides it when no Node spoke by the pick-up timeout.

Pure: no I/O. The layer holds the claim (``ClaimingLayer.claim``: one ``SET NX`` on the server
of the connection's reply channel); this module says what the holder's value means.

Rules of this file:

- A connect that asks for it (``Connect.claim``) is claimed by the Node that takes it, before
  the application's first line runs, instead of being answered with an accept frame of its
  own. The accept then travels with the Node's first frame (``Accept.messages``): a request
  answered at once costs the edge one frame instead of two.
- The edge that heard nothing from a Node by its pick-up deadline claims the connection
  itself. Getting it means no Node will start the application: the 503 is exact, whatever the
  two clocks say. Losing it means a Node holds it: the holder's value names that Node's
  liveness channel and alive round, so the edge watches that Node while it waits for its frames.
- A Node that loses (the edge claimed first) does not start the application.
- Before its deadline the edge only looks (``holder``), never claims: a Node may still take
  the connect. A holder found so is watched as one found by the claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ACCEPT_HOLD", "EDGE_HOLDER", "FIRST_LOOK", "NodeHolder", "node_holder", "parse_holder"]

# The edge's value: it answered (503) and no Node may start the connection.
EDGE_HOLDER = "edge"
# A claimed connection's accept waits this long (seconds) for the application's first frame to
# ride with; then it goes alone, so the edge of a slow response hears from its Node early.
ACCEPT_HOLD = 0.05
# An edge that heard nothing this long after its connect looks (without claiming) for a Node
# holding it, and again after twice as long, and so on until its deadline: a Node that died
# before its accept went out is then judged by the liveness watch, not the pick-up timeout.
FIRST_LOOK = 5 * ACCEPT_HOLD
_NODE = "node"


@dataclass(slots=True)
class NodeHolder:
    """The Node holding a connection: its liveness channel, alive round, heartbeat interval
    and id, what the edge would have heard in its accept."""

    peer: str
    round: int
    heartbeat: float
    node: str | None = None


def node_holder(peer: str, round: int, heartbeat: float, node: str | None) -> str:
    """A Node's claim value. Channel names hold no spaces; the id, last, may."""
    value = f"{_NODE} {round} {heartbeat!r} {peer}"
    return value if node is None else f"{value} {node}"


def parse_holder(value: str) -> NodeHolder | None:
    """The Node in a claim value; None for the edge's value or one this side cannot read."""
    parts = value.split(" ", 4)
    if len(parts) < 4 or parts[0] != _NODE or not parts[1].isdigit() or "!" not in parts[3]:
        return None
    try:
        heartbeat = float(parts[2])
    except ValueError:
        return None
    if not 0 < heartbeat < math.inf:
        return None
    return NodeHolder(parts[3], int(parts[1]), heartbeat, parts[4] if len(parts) > 4 else None)
