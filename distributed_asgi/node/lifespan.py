"""Run an application's lifespan protocol, as uvicorn's ``LifespanOn`` does.

``mode`` is uvicorn's ``--lifespan``: "on" (startup failure or an exception is fatal), "off"
(never run it) or "auto" (an application that raises before startup completes simply does not
do lifespan; log it and go on). ``state`` is the dict the application fills at startup; each
connection scope gets a shallow copy of it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["Lifespan", "LifespanFailed"]

from distributed_asgi.core.types import ASGIApp, Message

logger = logging.getLogger("distributed_asgi.node")


MODES = ("auto", "on", "off")


class LifespanFailed(RuntimeError):
    """The application reported (or raised during) startup failure in "on" mode."""


class Lifespan:
    def __init__(self, app: ASGIApp, mode: str = "auto", asgi_version: str = "3.0") -> None:
        if mode not in MODES:
            raise ValueError(f"lifespan must be one of 'auto', 'on', 'off', got {mode!r}")
        self.app = app
        self.mode = mode
        self.asgi_version = asgi_version
        self.state: dict[str, Any] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.startup_failed = False
        self.shutdown_failed = False
        self.error_occurred = False
        self.unsupported = False
        self.failure_message = ""

    async def startup(self) -> None:
        if self.mode == "off":
            return
        logger.info("Waiting for application startup.")
        scope = {
            "type": "lifespan",
            "asgi": {"version": self.asgi_version, "spec_version": "2.0"},
            "state": self.state,
        }
        self._task = asyncio.get_running_loop().create_task(self._main(scope))
        await self._queue.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self.startup_failed or (self.error_occurred and self.mode == "on"):
            raise LifespanFailed(f"Application startup failed. {self.failure_message}".strip())
        if not self.unsupported:
            logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        if self._task is None or self.unsupported or self.error_occurred:
            return
        logger.info("Waiting for application shutdown.")
        await self._queue.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self.shutdown_failed or (self.error_occurred and self.mode == "on"):
            logger.error("Application shutdown failed. %s", self.failure_message)
        else:
            logger.info("Application shutdown complete.")
        await asyncio.gather(self._task, return_exceptions=True)

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            self.error_occurred = True
            if self.startup_failed or self.shutdown_failed:
                return
            if self.mode == "auto" and not self._startup_done.is_set():
                self.unsupported = True
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                logger.error("Exception in 'lifespan' protocol\n", exc_info=exc)
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> Message:
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete" and not self._startup_done.is_set():
            self._startup_done.set()
        elif kind == "lifespan.startup.failed" and not self._startup_done.is_set():
            self.startup_failed = True
            self.failure_message = str(message.get("message", ""))
            self._startup_done.set()
            logger.error("Application startup failed. %s", self.failure_message)
        elif kind == "lifespan.shutdown.complete" and self._startup_done.is_set():
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed" and self._startup_done.is_set():
            self.shutdown_failed = True
            self.failure_message = str(message.get("message", ""))
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' in the lifespan protocol.")
