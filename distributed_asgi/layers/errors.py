"""The exceptions a channel layer raises, so the gateway never depends on a client library.

- ``ChannelFull`` (in ``base``): the channel is at capacity; nothing was sent. Flow control.
- ``LayerUnavailable``: the server could not be reached or did not answer in time (refused TCP
  connection, reset, timeout, the layer is closed). Nothing is known to have happened; the call
  may succeed later. A ``ConnectionError`` (so an ``OSError``), as a lost socket is.
- ``LayerRefused``: the server answered and refused the operation (out of memory, a key holding
  another type, a read-only replica). Retrying the same call will most likely fail again.

Every layer here raises these (and only these, plus ``ChannelFull``, ``WrongClientPrefix`` and
the ``TypeError``/``ValueError`` of bad arguments) from ``send``, ``receive``, ``new_channel``,
the group methods and ``flush``; a user's own layer raises them to get the same treatment from
the edge and the Node. The original error is chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = ["LayerError", "LayerRefused", "LayerUnavailable"]


class LayerError(Exception):
    """Base of the errors a channel layer raises about its server."""


class LayerUnavailable(LayerError, ConnectionError):
    """The layer's server could not be reached or did not answer in time."""


class LayerRefused(LayerError):
    """The layer's server answered and refused the operation (e.g. OOM, WRONGTYPE)."""
