"""The client's side of an edge connection: what it is handed, through one cycle.

Everything the client gets goes through the cycle (core/cycle.py), whether it came from the
Node or is the edge's own answer (404, 413, 502, 503, 504), so nothing is sent after the
response is complete, and a message that breaks the ASGI rules is refused here rather than by
the server. A WebSocket denial response is held until its last body chunk (edge/denial.py).
"""

from __future__ import annotations

import asyncio

from distributed_asgi.core.cycle import HTTPCycle, WebSocketCycle, WebSocketState, cycle_for
from distributed_asgi.core.types import Message, Receive, Scope, Send
from distributed_asgi.edge.denial import HeldDenial
from distributed_asgi.edge.refusal import RemoteApplicationError, edge_answer
from distributed_asgi.edge.settings import EdgeSettings

__all__ = ["ClientSide", "first_message"]


async def first_message(
    receive: Receive, has_body: bool
) -> tuple[Message | None, asyncio.Future[Message] | None]:
    """The client's first message when it is here, else (a body that is not here yet) None
    and the future of it. A request without a body (or ``websocket.connect``) the server
    answers at once; a body gets one turn of the loop, enough for one already here to come
    back with the connect frame, never a wait for a slow client before a Node is even asked."""
    if not has_body:
        return await receive(), None
    first = asyncio.ensure_future(receive())
    await asyncio.sleep(0)
    return (first.result(), None) if first.done() else (None, first)


class ClientSide:
    """The server's ``send`` for one connection, behind its cycle."""

    def __init__(self, scope: Scope, send: Send, settings: EdgeSettings) -> None:
        self.scope = scope
        self.send = send
        self.settings = settings
        self.cycle: HTTPCycle | WebSocketCycle = cycle_for(scope)
        self.is_http = scope["type"] == "http"
        self.status: int | None = None  # what the client was answered, for the metrics
        # A WebSocket denial response being collected (start, body chunks) before delivery.
        self._held: HeldDenial | None = None

    @property
    def saw_response(self) -> bool:
        """Something of the response reached the server (a held denial has not)."""
        return self.cycle.started and self._held is None

    def completed_by(self, messages: list[Message]) -> bool:
        """Whether ``messages`` end an HTTP response (its last body chunk is among them)."""
        if not self.is_http or not messages:
            return False
        last = messages[-1]
        return last.get("type") == "http.response.body" and not last.get("more_body", False)

    async def pass_on(self, messages: list[Message]) -> bool:
        """Pass the Node's messages on; True once the application's side is finished."""
        for message in messages:
            if self.cycle.finished:  # e.g. the edge answered 413 meanwhile
                return True
            await self._pass_on(message)
        return self.cycle.finished

    async def _pass_on(self, message: Message) -> None:
        try:
            self.cycle.on_send(message)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            # The Node checks the same rules before sending, so this is a foreign or corrupt
            # frame: end the connection rather than pass on something the server would reject.
            raise RemoteApplicationError(f"invalid message from the Node: {exc}") from None
        kind = message["type"]
        if kind == "http.response.start" or kind == "websocket.http.response.start":
            self.status = int(message["status"])
        elif kind == "websocket.accept":
            self.status = 101
        if kind == "websocket.http.response.start":
            self._held = HeldDenial(message)
        elif self._held is None:
            await self.send(message)
        elif self._held.add(message):
            await self.release_held()

    async def release_held(self) -> None:
        """Hand the denial response collected so far to the server, back to back (no await
        in between yields to the server's handshake)."""
        held, self._held = self._held, None
        for message in held.messages if held is not None else ():
            await self.send(message)

    async def respond(self, status: int, *, retry_after: bool = False) -> None:
        """The edge's own answer. It replaces whatever was under way and goes through a fresh
        cycle, so that anything the Node still sends afterwards is recognised as too late."""
        self.status = status
        self.cycle = cycle_for(self.scope)
        wait = self.settings.retry_after if retry_after else None
        for message in edge_answer(self.scope, status, wait):
            self.cycle.on_send(message)
            await self.send(message)

    async def upstream_failed(self) -> None:
        """The Node or Redis is gone mid-connection: 502 while the client has seen nothing,
        1011 for a WebSocket that was open."""
        if not self.saw_response:
            self._held = None
            await self.respond(502)
        elif (
            isinstance(self.cycle, WebSocketCycle) and self.cycle.state is WebSocketState.CONNECTED
        ):
            await self.send({"type": "websocket.close", "code": 1011})
        # An HTTP response already under way: returning unfinished makes the server close it.
