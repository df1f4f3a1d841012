"""A WebSocket denial response held at the edge until its body is complete.

It is handed to the server only then, start and every chunk back to back: uvicorn's legacy
``websockets`` implementation answers the handshake as soon as the loop turns after the
start, and loses body chunks that come later. Past ``DENIAL_HOLD_LIMIT`` body bytes the rest
streams (that implementation then cuts the body there).
"""

from __future__ import annotations

from distributed_asgi.core.types import Message

__all__ = ["DENIAL_HOLD_LIMIT", "HeldDenial"]

DENIAL_HOLD_LIMIT = 1024 * 1024


class HeldDenial:
    """The messages of one denial response collected so far."""

    def __init__(self, start: Message) -> None:
        self.messages = [start]
        self._size = 0

    def add(self, message: Message) -> bool:
        """Collect a body chunk; True when the response is to be handed over now."""
        self.messages.append(message)
        self._size += len(message.get("body", b""))
        return not message.get("more_body", False) or self._size > DENIAL_HOLD_LIMIT
