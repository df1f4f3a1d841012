"""One Redis server as seen from one event loop: a client, batched script calls, health.

Concurrent ``call()``s are written as one pipeline: while a batch is on the wire, new calls
queue up and go together in the next, so N concurrent sends cost about one round trip instead
of N, with no added latency when there is no concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connection import DedicatedConnection
from .hosts import HostSpec
from .scripts import ACK, LuaScript

__all__ = ["CONNECTION_ERRORS", "HEALTH_HOOKS", "Shard", "is_noscript"]

logger = logging.getLogger("distributed_asgi.layers")

# What a lost or unreachable server looks like from redis-py.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # includes the builtin ConnectionError and TimeoutError
    asyncio.TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
)

# Called with (server, reachable) where an outage's start and end are logged: metrics.py counts
# outages and reconnects here, without the layer depending on prometheus-client.
HEALTH_HOOKS: list[Callable[[str, bool], None]] = []

# (script, keys, args, future); script None is an ack: keys is [counter key] and args holds one
# Counter of channel -> messages received, merged while the ack waits for its batch.
_Call = tuple[LuaScript | None, Sequence[str], list[Any], "asyncio.Future[Any]"]


class Shard:
    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.client: aioredis.Redis = spec.create_client()
        self._batch_connection = DedicatedConnection(self.client)
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self._active = False  # a batch is being executed (by a caller or the flusher)
        self._open_acks: dict[str, Counter[str]] = {}  # counter key -> acks of a queued call
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
            for hook in HEALTH_HOOKS:
                hook(self.spec.describe(), False)

    def succeeded(self) -> None:
        if self._down_since is not None:
            logger.warning(
                "Redis %s reachable again after %.1fs",
                self.spec.describe(),
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            for hook in HEALTH_HOOKS:
                hook(self.spec.describe(), True)

    # -- batched script calls --------------------------------------------------------------------

    async def call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._active:
            # A batch is on the wire or queued: ride along with the next one, in order.
            self._pending.append((script, keys, list(args), future))
            return await future
        # Nothing in flight: run this call right here, saving a task and a loop turn.
        self._active = True
        try:
            await self._run([(script, keys, list(args), future)])
        finally:
            if self._pending:
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
            else:
                self._active = False
        return await future

    def ack(self, counter_key: str, channel: str) -> None:
        """Count one message of ``channel`` as received, without waiting.

        Acks of one inbox merge while they wait for a batch: one plain ``HINCRBY`` when it is a
        single channel (the ping-pong case), one script call for many (the fan-out case). The
        ack is queued before anything this process sends afterwards, on the same connection,
        so any send that follows a receive() (here, or elsewhere in reaction to a message sent
        from here) sees the freed capacity.
        """
        counts = self._open_acks.get(counter_key)
        if counts is None:
            counts = self._open_acks[counter_key] = Counter()
            self._enqueue((None, [counter_key], [counts], _ignored_future()))
        counts[channel] += 1

    def post(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue a script call whose result nobody waits for (failures are logged)."""
        self._enqueue((script, keys, list(args), _ignored_future()))

    def _enqueue(self, call: _Call) -> None:
        self._pending.append(call)
        if not self._active:
            self._active = True
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self._open_acks.clear()
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
                for script in {c[0] or ACK for c in retry}:
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
        commands = [
            _ack_command(keys[0], args[0])
            if script is None
            else ("EVALSHA", script.sha, len(keys), *keys, *args)
            for script, keys, args, _ in batch
        ]
        try:
            return await self._batch_connection.execute(commands)
        except CONNECTION_ERRORS:
            # A pooled connection goes stale when the server restarts; a restarted server ran
            # none of these commands, so one immediate retry on a fresh connection is safe.
            return await self._batch_connection.execute(commands)

    async def load_script(self, script: LuaScript) -> None:
        await self.client.script_load(script.source)

    async def settle(self) -> None:
        """Wait until every queued call (acks and posts included) has been sent."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def close(self) -> None:
        await self.settle()
        await self._batch_connection.release()
        await self.client.aclose()


def is_noscript(result: object) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT")
    )


def _ack_command(counter_key: str, counts: Counter[str]) -> tuple[Any, ...]:
    if len(counts) == 1:
        ((channel, count),) = counts.items()
        return ("HINCRBY", counter_key, channel, -count)
    flat = [item for pair in counts.items() for item in pair]
    return ("EVALSHA", ACK.sha, 1, counter_key, *flat)


def _ignored_future() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.add_done_callback(_report_failure)
    return future


def _report_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        # A lost ack costs capacity until the inbox's counters expire (after `expiry` idle).
        logger.warning("background Redis call failed: %s", future.exception())
