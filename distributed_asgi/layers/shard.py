"""One Redis server as seen from one event loop: a client, batched script calls, health.

Concurrent ``call()``s are written as one pipeline: while a batch is on the wire, new calls
queue up and go together in the next, so N concurrent sends cost about one round trip instead
of N, with no added latency when there is no concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .hosts import HostSpec
from .scripts import LuaScript

__all__ = ["CONNECTION_ERRORS", "Shard", "is_noscript"]

logger = logging.getLogger("distributed_asgi.layers")

# What a lost or unreachable server looks like from redis-py.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes the builtin ConnectionError and TimeoutError
    asyncio.TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
)

_Call = tuple[LuaScript, Sequence[str], Sequence[Any], "asyncio.Future[Any]"]


class Shard:
    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.client: aioredis.Redis = spec.create_client()
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self._active = False  # a batch is being executed (by a caller or the flusher)
        self._down_since: float | None = None

    # -- health: log the start and end of an outage once each, not every failed call -----------

    def failed(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "Redis %s unreachable (%s: %s); retrying",
                self.spec.describe(),
                type(exc).__name__,
                exc,
            )

    def succeeded(self) -> None:
        if self._down_since is not None:
            logger.warning(
                "Redis %s reachable again after %.1fs",
                self.spec.describe(),
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    # -- batched script calls --------------------------------------------------------------------

    async def call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._active:
            # A batch is on the wire: ride along with the next one.
            self._pending.append((script, keys, args, future))
            return await future
        # Nothing in flight: run this call right here, saving a task and a loop turn.
        self._active = True
        try:
            await self._run([(script, keys, args, future)])
        finally:
            if self._pending:
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
            else:
                self._active = False
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._run(batch)
        finally:
            self._flusher = None
            self._active = False

    async def _run(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
            retry = [c for c, r in zip(batch, results, strict=True) if is_noscript(r)]
            if retry:
                # The server restarted or flushed its script cache: load and run those again
                # (they were not executed, so nothing runs twice).
                for script in {c[0] for c in retry}:
                    await self.client.script_load(script.source)
                results = [r for c, r in zip(batch, results, strict=True) if not is_noscript(r)]
                batch = [c for c in batch if c not in retry] + retry
                results += await self._execute(retry)
        except CONNECTION_ERRORS as exc:
            self.failed(exc)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            # Cancelled mid-batch: whether the commands ran is unknown, so say so to the waiters.
            for *_, future in batch:
                if not future.done():
                    future.cancel()
            raise
        self.succeeded()
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        if len(batch) == 1:
            script, keys, args, _ = batch[0]
            try:
                return [await self.client.evalsha(script.sha, len(keys), *keys, *args)]
            except ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def load_script(self, script: LuaScript) -> None:
        await self.client.script_load(script.source)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.client.aclose()


def is_noscript(result: object) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT")
    )
