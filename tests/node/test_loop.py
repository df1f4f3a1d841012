"""``Node(loop=...)``: the event loop ``run()`` makes, uvloop by default when installed."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

from distributed_asgi import Node
from distributed_asgi.layers import InMemoryChannelLayer


def _loop_of_run(**options: Any) -> type[asyncio.AbstractEventLoop]:
    """The class of the loop a Node's ``run()`` served in (seen by the app's lifespan)."""
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        seen.append(type(asyncio.get_running_loop()))
        node.stop()  # asked from inside: the Node drains (nothing) and returns
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    node = Node(app=app, key="k", layer=InMemoryChannelLayer(), lifespan="on", **options)
    node.run()
    return seen[0]


HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
needs_uvloop = pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed")
without_uvloop = pytest.mark.skipif(HAS_UVLOOP, reason="uvloop is installed")


def _is_uvloop(cls: type[asyncio.AbstractEventLoop]) -> bool:
    return cls.__module__.startswith("uvloop")


@needs_uvloop
def test_run_uses_uvloop_by_default_when_it_is_installed() -> None:
    assert _is_uvloop(_loop_of_run())


@needs_uvloop
def test_run_uses_uvloop_when_asked() -> None:
    assert _is_uvloop(_loop_of_run(loop="uvloop"))


@without_uvloop
def test_run_uses_asyncio_by_default_when_uvloop_is_not_installed() -> None:
    assert not _is_uvloop(_loop_of_run())


@without_uvloop
def test_asking_for_uvloop_without_it_is_refused() -> None:
    with pytest.raises(ValueError, match="loop='uvloop' needs uvloop, which is not installed"):
        Node(app=lambda *a: None, key="k", layer=InMemoryChannelLayer(), loop="uvloop")


def test_run_uses_plain_asyncio_when_asked() -> None:
    assert not _is_uvloop(_loop_of_run(loop="asyncio"))


def test_an_unknown_loop_is_refused_naming_it() -> None:
    with pytest.raises(
        ValueError, match="loop must be one of 'auto', 'asyncio', 'uvloop', got 'tokio'"
    ):
        Node(app=lambda *a: None, key="k", layer=InMemoryChannelLayer(), loop="tokio")
