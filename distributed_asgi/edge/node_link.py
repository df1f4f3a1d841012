"""The edge's frames to the Node of one connection, as ``ClientSide`` is what goes to the client.

Rules of this file:

- Every frame goes to the channel the Node's accept named, with the layer's ``push``, within
  the Node's window: a Redis that cannot take a frame in that time has lost the connection as
  surely as a silent Node.
- ``asgi`` frames wait for the Node's credit (core/flow.py), so a slow application slows the
  upload; ``credit`` gives the Node's frames back as the client takes them. A last word (the
  client's disconnect) neither waits for credit nor fails.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from distributed_asgi._aio import DeadlineExceeded, within
from distributed_asgi.core.flow import CreditWindow
from distributed_asgi.core.frames import Asgi, Credit, FrameError, decode_frame, encode
from distributed_asgi.core.types import Message
from distributed_asgi.layers import GatewayLayer, LayerError

__all__ = ["LAYER_FAILURES", "NodeLink", "decode_logged"]

logger = logging.getLogger("distributed_asgi.distributor")

# A layer call for a connection failed or did not answer in time.
LAYER_FAILURES: tuple[type[Exception], ...] = (DeadlineExceeded, LayerError)


def decode_logged(raw: Message, channel: str) -> Any:
    """The frame in ``raw``, from the reply channel; None (logged) for a bad one."""
    try:
        return decode_frame(raw)
    except FrameError as exc:
        logger.warning("dropped a bad frame on %s: %s", channel, exc)
        return None


class NodeLink:
    """The frames of one connection to its Node's channel, within credit and the window."""

    __slots__ = ("channel", "conn_id", "disconnect", "flow", "layer", "window")

    def __init__(
        self, layer: GatewayLayer, conn_id: str, channel: str, window: float, is_http: bool
    ) -> None:
        self.layer = layer
        self.conn_id = conn_id
        self.channel = channel
        self.window = window
        self.flow = CreditWindow()  # frames to the Node, and the Node's frames taken
        # What the application hears when its client is lost, as from uvicorn.
        self.disconnect: Message = (
            {"type": "http.disconnect"}
            if is_http
            else {"type": "websocket.disconnect", "code": 1006}
        )

    async def send(self, messages: list[Message], *, retry: bool = True) -> None:
        """One ``asgi`` frame to the Node; ``retry=False`` for a last word, which neither
        waits for credit nor fails."""
        if retry:
            await self.flow.take()  # the application may be slower than the client
        try:
            await within(self.window, self._push(encode(Asgi(self.conn_id, messages))))
        except LAYER_FAILURES:
            if retry:
                raise

    async def give_credit(self, frames: int) -> None:
        with contextlib.suppress(*LAYER_FAILURES):  # lost: the Node's liveness judges the rest
            await within(self.window, self._push(encode(Credit(self.conn_id, frames))))

    async def last_word(self) -> None:
        """The client is gone: tell the application (run in the background by the edge)."""
        await self.send([self.disconnect], retry=False)

    async def _push(self, frame: Message) -> None:
        await self.layer.push(self.channel, frame)
