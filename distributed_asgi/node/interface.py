"""Which ASGI interface an application speaks, told apart as uvicorn tells it.

uvicorn's ``Config.load()`` (``--interface auto``): a class is ASGI 3 when it has
``__await__`` (``cls(scope, receive, send)`` is awaited), else ASGI 2 (``cls(scope)``, then
``await instance(receive, send)``); a function, or an instance by its ``__call__``, is ASGI 3
when it is a coroutine function, else ASGI 2. asgiref's ``is_double_callable`` answers the
same for functions and instances, and also sees through bound methods and
``functools.partial`` (which uvicorn's rule reads as ASGI 2, and then fails to call) and
honours asgiref's explicit ``_asgi_single_callable`` / ``_asgi_double_callable`` hints; so
classes go by uvicorn's rule and everything else by asgiref's.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from asgiref.compatibility import is_double_callable

__all__ = ["INTERFACES", "ASGI2App", "as_asgi3", "detect_interface"]

INTERFACES = ("auto", "asgi3", "asgi2")

Interface = Literal["asgi3", "asgi2"]


def detect_interface(app: Any) -> Interface:
    if getattr(app, "_asgi_single_callable", False):
        return "asgi3"
    if getattr(app, "_asgi_double_callable", False):
        return "asgi2"
    if inspect.isclass(app):
        return "asgi3" if hasattr(app, "__await__") else "asgi2"
    double = is_double_callable(app)  # type: ignore[no-untyped-call]
    return "asgi2" if double else "asgi3"


class ASGI2App:
    """An ASGI 2 application as an ASGI 3 callable (uvicorn's ``ASGI2Middleware``)."""

    asgi_version = "2.0"

    def __init__(self, app: Callable[[dict[str, Any]], Any]) -> None:
        self.app = app

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        instance = self.app(scope)
        await instance(receive, send)

    def __repr__(self) -> str:
        return f"ASGI2App({self.app!r})"


def as_asgi3(app: Any, interface: str = "auto") -> tuple[Callable[..., Any], str]:
    """``app`` as an ASGI 3 callable, and the ASGI version its scopes should say.

    ``interface`` is ``auto`` (detect), ``asgi3`` or ``asgi2``, as uvicorn's ``--interface``.
    """
    if interface not in INTERFACES:
        raise ValueError(f"interface must be one of 'auto', 'asgi3', 'asgi2', got {interface!r}")
    if isinstance(app, ASGI2App):  # already adapted (by load_app, say)
        return app, ASGI2App.asgi_version
    resolved = detect_interface(app) if interface == "auto" else interface
    if resolved == "asgi2":
        return ASGI2App(app), ASGI2App.asgi_version
    return app, "3.0"
