"""What an application has sent on one connection, and what it may send next. Pure, no I/O.

Rules of this file:

- One object per connection and direction of interest; the Node feeds it every message the
  application sends, the edge every message it is about to hand to its server.
- ``on_send`` either accepts a message (and moves the state on) or raises ``RuntimeError`` with
  the text uvicorn uses for the same mistake, so an application's error log reads the same
  behind the gateway as behind uvicorn.
- ``finished`` is True once the application's side of the connection is over (a final response
  body, a close, a completed denial response): nothing after it reaches the client.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = ["HTTPCycle", "WebSocketCycle", "WebSocketState", "cycle_for"]


class HTTPCycle:
    """uvicorn's ``RequestResponseCycle`` flags, without the transport."""

    def __init__(self) -> None:
        self.response_started = False
        self.response_complete = False
        self.disconnected = False

    @property
    def finished(self) -> bool:
        return self.response_complete

    @property
    def started(self) -> bool:
        return self.response_started

    def on_send(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self.response_started = True
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            if not message.get("more_body", False):
                self.response_complete = True
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )

    def on_receive(self, message: Mapping[str, Any]) -> None:
        if message["type"] == "http.disconnect":
            self.disconnected = True


class WebSocketState(enum.Enum):
    CONNECTING = "connecting"
    RESPONSE = "response"  # sending a denial response (websocket.http.response extension)
    CONNECTED = "connected"
    CLOSED = "closed"


class WebSocketCycle:
    def __init__(self, *, denial_response: bool = False) -> None:
        self.state = WebSocketState.CONNECTING
        self.denial_response = denial_response
        self.disconnected = False
        self.close_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.state is WebSocketState.CLOSED

    @property
    def started(self) -> bool:
        """True once the handshake has an answer under way (accepted or denial started)."""
        return self.state is not WebSocketState.CONNECTING

    def on_send(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        state = self.state
        if state is WebSocketState.CONNECTING:
            if kind == "websocket.accept":
                self.state = WebSocketState.CONNECTED
            elif kind == "websocket.close":
                self.state = WebSocketState.CLOSED
                self.close_code = int(message.get("code", 1000))
            elif kind == "websocket.http.response.start" and self.denial_response:
                self.state = WebSocketState.RESPONSE
            else:
                raise RuntimeError(
                    # uvicorn's default WebSocket implementations' text (websockets-sansio,
                    # wsproto); its legacy "websockets" one has a comma before "or".
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' but got '{kind}'."
                )
        elif state is WebSocketState.CONNECTED:
            if kind == "websocket.close":
                self.state = WebSocketState.CLOSED
                self.close_code = int(message.get("code", 1000))
            elif kind != "websocket.send":
                raise RuntimeError(
                    "Expected ASGI message 'websocket.send' or 'websocket.close', "
                    f"but got '{kind}'."
                )
        elif state is WebSocketState.RESPONSE:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )
            if not message.get("more_body", False):
                self.state = WebSocketState.CLOSED
        else:
            # The text of uvicorn's default implementations, also after a denial response.
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

    def on_receive(self, message: Mapping[str, Any]) -> None:
        if message["type"] == "websocket.disconnect":
            self.disconnected = True


def cycle_for(scope: Mapping[str, Any]) -> HTTPCycle | WebSocketCycle:
    if scope["type"] == "http":
        return HTTPCycle()
    extensions = scope.get("extensions") or {}
    return WebSocketCycle(denial_response="websocket.http.response" in extensions)
