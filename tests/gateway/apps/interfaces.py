"""One HTTP app in every shape uvicorn tells apart, each answering ``NAME ASGI-VERSION``.

``SAMPLES`` maps a name to the app and the interface uvicorn's ``Config.load()`` gives it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def answer(name: str, scope: Scope, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = f"{name} {scope['asgi']['version']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def asgi3_function(scope: Scope, receive: Receive, send: Send) -> None:
    await answer("asgi3_function", scope, send)


def asgi2_function(scope: Scope) -> Callable[[Receive, Send], Awaitable[None]]:
    async def instance(receive: Receive, send: Send) -> None:
        await answer("asgi2_function", scope, send)

    return instance


class Asgi2Class:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, receive: Receive, send: Send) -> None:
        await answer("Asgi2Class", self.scope, send)


class Asgi3Class:
    """ASGI 3 as a class: ``Asgi3Class(scope, receive, send)`` is awaited."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.send = send

    def __await__(self) -> Generator[Any, None, None]:
        return answer("Asgi3Class", self.scope, self.send).__await__()


class Asgi3Callable:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer("asgi3_instance", scope, send)


class Asgi2Callable:
    def __call__(self, scope: Scope) -> Callable[[Receive, Send], Awaitable[None]]:
        async def instance(receive: Receive, send: Send) -> None:
            await answer("asgi2_instance", scope, send)

        return instance


class Handlers:
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer("bound_method", scope, send)


async def _named(name: str, scope: Scope, receive: Receive, send: Send) -> None:
    await answer(name, scope, send)


def asgi3_sync_wrapper(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """ASGI 3 behind a plain function (as some decorators make it): needs ``--interface asgi3``."""
    return asgi3_function(scope, receive, send)


asgi3_instance = Asgi3Callable()
asgi2_instance = Asgi2Callable()
bound_method = Handlers().handle
partial_function = functools.partial(_named, "partial_function")

# name -> (app, what uvicorn's Config.load() detects)
SAMPLES: dict[str, tuple[Any, str]] = {
    "asgi3_function": (asgi3_function, "asgi3"),
    "asgi2_function": (asgi2_function, "asgi2"),
    "Asgi2Class": (Asgi2Class, "asgi2"),
    "Asgi3Class": (Asgi3Class, "asgi3"),
    "asgi3_instance": (asgi3_instance, "asgi3"),
    "asgi2_instance": (asgi2_instance, "asgi2"),
}
# uvicorn's rule reads these as ASGI 2 (it checks their wrapper's __call__) and then fails to
# call them; asgiref sees through them. They are ASGI 3.
ASGI3_WRAPPERS: dict[str, Any] = {
    "bound_method": bound_method,
    "partial_function": partial_function,
}
