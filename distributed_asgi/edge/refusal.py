"""The edge's own answers (404, 413, 502, 503, 504), what a request's headers say about its
body (for 413 before anything is read), and the error for an application that raised on the
Node."""

from __future__ import annotations

import http

from distributed_asgi.core.types import Message, Scope, Send

__all__ = ["RemoteApplicationError", "edge_answer", "refusal_messages", "refuse"]


class RemoteApplicationError(Exception):
    """The application raised on the Node; raised at the edge so its server acts as it would
    for a local exception (500 before the response started, a closed connection after)."""


async def refuse(
    scope: Scope, send: Send, status: int, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    for message in refusal_messages(scope, status, extra_headers or []):
        await send(message)


def refusal_messages(
    scope: Scope, status: int, extra_headers: list[tuple[bytes, bytes]]
) -> list[Message]:
    """An answer from the edge itself: a plain-text error for HTTP; for a WebSocket handshake a
    denial response where the server offers one, else a close (the server sends 403)."""
    body = http.HTTPStatus(status).phrase.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    if scope["type"] == "http":
        return [
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body},
        ]
    if "websocket.http.response" in (scope.get("extensions") or {}):
        return [
            {"type": "websocket.http.response.start", "status": status, "headers": headers},
            {"type": "websocket.http.response.body", "body": body},
        ]
    return [{"type": "websocket.close", "code": 1013}]


def edge_answer(scope: Scope, status: int, retry_after: int | None) -> list[Message]:
    """The edge's answer to a connection: ``Retry-After`` when given (no Node took it), and
    ``Connection: close`` for a 413, as the rest of the body is unread: closing rather than
    keeping a half-read connection alive (RFC 9110 15.5.14) also spares the server from
    draining it."""
    headers = []
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if status == 413:
        headers.append((b"connection", b"close"))
    return refusal_messages(scope, status, headers)


def announced_body(scope: Scope) -> tuple[bool, int]:
    """Whether an HTTP request's headers announce a body (chunked, or a non-zero length), and
    its ``content-length`` (0 when absent or not a number: the server rejects those itself);
    one pass over the headers."""
    body, length, counted = False, 0, False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            body = body or value != b"0"
            if not counted:  # the first one counts
                counted = True
                try:
                    length = int(value)
                except ValueError:
                    length = 0
        elif name == b"transfer-encoding":
            body = True
    return body, length
