"""The fidelity app, plus ``/scope``: what the Node's application sees of the scope the edge's
server made (tests/gateway/test_servers.py compares the servers through it)."""

from __future__ import annotations

from tests.gateway.apps.fidelity import Receive, Scope, Send, json_response
from tests.gateway.apps.fidelity import app as fidelity


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/scope":
        await json_response(send, describe(scope))
        return
    await fidelity(scope, receive, send)


def describe(scope: Scope) -> dict[str, object]:
    return {
        "http_version": scope.get("http_version"),
        "scheme": scope.get("scheme"),
        "asgi": scope.get("asgi"),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "extensions": sorted(scope.get("extensions") or {}),
        "keys": sorted(scope),
    }
