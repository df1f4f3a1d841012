"""One Redis server as seen from one event loop: a client, batched script calls, health.

Calls are pipelined automatically (as ioredis's ``enableAutoPipelining``): once calls come
several together, every ``call()`` made in one turn of the loop goes out in one write; while a
batch is on the wire new calls queue for the next. Calls that come one at a time are written at
once, by their caller. Pushes to one queue that follow each other in a batch are one ``RPUSH``
of all their entries and one ``PEXPIRE``.

Acks (messages received, to count off their channel's capacity) wait in an ``AckLedger``
(acks.py) that belongs to the layer, not to the loop: they go out with the next call to that
server, or in a batch of their own ``ACK_DELAY`` after the first of them, so a receiver that
sends nothing writes one batch for all it received meanwhile instead of one per message. One a
loop did not get to write before it ended goes out with the next write to that server from any
loop (and ``close()`` writes what is left).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .acks import AckLedger
from .batch import COMMAND, COMMANDS, Call, ack_commands, assemble, regroup
from .connection import DedicatedConnection, pack_commands
from .hosts import HostSpec
from .redis_errors import CONNECTION_ERRORS, is_noscript, reply_error, translate, translated
from .scripts import LuaScript

__all__ = [
    "CONNECTION_ERRORS",
    "HEALTH_HOOKS",
    "AckLedger",
    "Shard",
    "is_noscript",
    "translate",
    "translated",
]

logger = logging.getLogger("distributed_asgi.layers")

# Called with (server, reachable) where an outage's start and end are logged: metrics.py counts
# outages and reconnects here, without the layer depending on prometheus-client.
HEALTH_HOOKS: list[Callable[[str, bool], None]] = []

# What reading the owed ack replies on close may raise (the connection is then dropped).
_CLOSE_READ_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, RedisError)
# How long close() spends writing acks that are still in the ledger.
ACK_WRITE_TIMEOUT = 1.0
# How long an ack waits for a call to ride with before it is written on its own: a receiver
# getting one message at a time then writes once per few messages, not once per message.
ACK_DELAY = 0.005
# Batches of one caller's call in a row after which calls count as coming one at a time (see
# call()): a quiet moment under load does not end the batching.
ALONE_AFTER = 8


class Shard:
    def __init__(self, spec: HostSpec, ledger: AckLedger | None = None) -> None:
        self.spec = spec
        self.client: aioredis.Redis = spec.create_client()
        self.ledger = ledger if ledger is not None else AckLedger()
        self._batch_connection = DedicatedConnection(self.client)
        self._pending: list[Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self._active = False  # a batch is being executed (by a caller or the flusher)
        self._written = False  # the batch being executed has been written to the socket
        self._alone = ALONE_AFTER  # batches in a row that carried one caller's call (call())
        self._acks_task: asyncio.Task[None] | None = None  # _write_acks, not yet started
        self._acks_timer: asyncio.TimerHandle | None = None  # calls _acks_due
        # Replies owed by the batch connection for acks written on their own (_acks_due):
        # read, ahead of its own, by the next batch (or on close), not waited for.
        self._unread = 0
        # Its loop (one shard per loop, loops.py), kept: get_running_loop() makes a getpid().
        self._loop: asyncio.AbstractEventLoop | None = None
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

    async def command(self, *args: Any) -> Any:
        """One plain command (``CLIENT UNBLOCK``), batched like ``call()``."""
        return await self.call(COMMAND, (), args)

    async def commands(self, *commands: Sequence[Any]) -> list[Any]:
        """Plain commands written one after the other in one batch, with one future: their
        replies, or the first error reply raised."""
        replies: list[Any] = await self.call(COMMANDS, (), commands)
        return replies

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
        """Run ``script`` in a batch with the calls around it. While calls come one at a time
        (``ALONE_AFTER`` batches of one), one with nothing on the wire is written at once, by
        the caller's wait: no task, no loop turn. Otherwise it is left to the flusher task,
        which writes it after the tasks ready now have made theirs: all of this turn's calls in
        one write. Queued when called, in call order, and answered by the future itself (no
        coroutine around it: under load every call is batched)."""
        future: asyncio.Future[Any] = self._get_loop().create_future()
        # A dead flusher leaves _active set: _enqueue() forgets it and starts a new one.
        if self._active or self._alone < ALONE_AFTER:
            self._enqueue((script, keys, list(args), future))
            return future
        return self._call_alone(script, keys, args, future)

    async def _call_alone(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Any],
        future: asyncio.Future[Any],
    ) -> Any:
        """``call()`` with nothing on the wire: this batch written now, by its caller."""
        if self._active:  # another call started a batch before this one was awaited
            self._enqueue((script, keys, list(args), future))
            return await future
        self._active = True
        acks_written = destroyed = False
        try:
            acks_written = await self._run([*self._ack_calls(), (script, keys, list(args), future)])
        except GeneratorExit:
            destroyed = True  # with its closed loop: no task can be made
            raise
        finally:
            if destroyed:
                pass
            elif self._pending or (acks_written and self.ledger):
                self._flusher = self._get_loop().create_task(self._flush())
            else:
                self._active = False
        return await future

    def ack(self, counter_key: str, channel: str) -> None:
        """Count one message of ``channel`` as received, without waiting.

        Acks of one inbox merge while they wait for a batch: one plain ``HINCRBY`` per channel,
        of all its messages received meanwhile. The ack goes out before anything this process
        sends afterwards to this server, from any loop, so any send that follows a receive()
        (here, or elsewhere in reaction to a message sent from here) sees the freed capacity;
        without such a call, within ``ACK_DELAY``.
        """
        self.ledger.add(counter_key, channel)
        if self._acks_timer is None:
            self._acks_timer = self._get_loop().call_later(ACK_DELAY, self._acks_due)

    def _acks_due(self) -> None:
        """The first ack waiting in the ledger has waited ``ACK_DELAY``: write them all now,
        unless a call is taking them along.

        With no batch in flight and the connection up they are written right here, their
        replies left for the next batch to read first (``_unread``): no task, no wait. Lost
        with a failing connection, as an ack written in a failed batch always was.
        """
        self._acks_timer = None
        if not self.ledger:
            return  # taken along by a call meanwhile
        self._forget_dead_flusher()
        pending = self._acks_task
        if self._active or (pending is not None and not pending.done()):
            return  # the batch in flight (or about to run) takes them along
        taken = self.ledger.take()
        commands = [
            command
            for counter_key, counts in taken.items()
            for command in ack_commands(counter_key, counts)
        ]
        if self._batch_connection.write_now(pack_commands(commands)):
            self._unread += len(commands)
            return
        for counter_key, counts in taken.items():  # not written: a batch of their own
            self.ledger.restore(counter_key, counts)
        self._acks_task = self._get_loop().create_task(self._write_acks())

    async def _write_acks(self) -> None:
        """The acks' own batch, unless a call took them along meanwhile: a receiver that sends
        right after it received (a reply, the next ping) writes its call with the acks at
        once, instead of queueing behind a flusher that was started for the acks alone."""
        self._acks_task = None
        if self._active or not self.ledger:
            return  # taken along by a call (or a call now in flight takes them next)
        self._active = True
        self._flusher = asyncio.current_task()
        await self._flush()

    def post(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue a script call whose result nobody waits for (failures are logged)."""
        self._enqueue((script, keys, list(args), None))

    def _enqueue(self, call: Call) -> None:
        self._pending.append(call)
        self._start_flusher()

    def _forget_dead_flusher(self) -> None:
        if self._active and self._flusher is not None and self._flusher.done():
            # Cancelled before it ever ran (its loop is ending), so its finally never did.
            self._active, self._flusher = False, None

    def _start_flusher(self) -> None:
        self._forget_dead_flusher()
        if not self._active:
            self._active = True
            self._flusher = self._get_loop().create_task(self._flush())

    def _ack_calls(self) -> list[Call]:
        if not self.ledger:  # the common case, without the ledger's lock
            return []
        return [
            (None, [counter_key], [counts], None)
            for counter_key, counts in self.ledger.take().items()
        ]

    async def _flush(self) -> None:
        with_acks = True
        restart = False
        try:
            while self._pending or (with_acks and self.ledger):
                acks = self._ack_calls() if with_acks else []
                batch, self._pending = [*acks, *self._pending], []
                # Acks that could not be written wait for the next call: no retrying in a loop
                # while the server is away.
                with_acks = await self._run(batch)
        except asyncio.CancelledError:
            # Cancelled mid-batch (its loop is ending): the calls queued behind it still run,
            # in a new task, so their callers (a reader reading back its pops, say) are not
            # left waiting.
            restart = bool(self._pending)
            raise
        finally:
            self._flusher = None
            if restart:
                self._flusher = self._get_loop().create_task(self._flush())
            else:
                self._active = False

    async def _run(self, batch: list[Call]) -> bool:
        """Execute ``batch``; False when it failed before it was written (its acks are back
        in the ledger)."""
        self._written = False
        self._alone = self._alone + 1 if _one_waiter_at_most(batch) else 0
        try:
            results = await self._execute(batch)
            # Error replies are rare: only they are asked whether they are NOSCRIPT.
            failed = [i for i, result in enumerate(results) if isinstance(result, Exception)]
            retry = [batch[i] for i in failed if is_noscript(results[i])]
            if retry:
                # The server restarted or flushed its script cache: load and run those again
                # (they were not executed, so nothing runs twice).
                for script in {c[0] for c in retry}:
                    assert script is not None  # acks are plain commands
                    await self.client.script_load(script.source)
                results = [r for c, r in zip(batch, results, strict=True) if not is_noscript(r)]
                batch = [c for c in batch if c not in retry] + retry
                results += await self._execute(retry)
        except Exception as exc:
            if isinstance(exc, CONNECTION_ERRORS):
                self.failed(exc)
            self._keep_unwritten_acks(batch)
            error = translate(exc)
            for kind, _, _, future in batch:
                if future is None:
                    if kind is not None or self._written:  # else back in the ledger
                        _report_failure(error)
                elif not future.done():
                    future.set_exception(error)
            return self._written
        except GeneratorExit:
            raise  # destroyed with its closed loop: its futures cannot be told any more
        except BaseException:
            # Cancelled mid-batch: whether the commands ran is unknown, so say so to the waiters.
            self._keep_unwritten_acks(batch)
            for *_, future in batch:
                if future is not None and not future.done():
                    future.cancel()
            raise
        self.succeeded()
        for (*_, future), result in zip(batch, results, strict=True):
            if future is None:
                if isinstance(result, Exception):
                    _report_failure(reply_error(result))
            elif future.done():
                continue
            elif isinstance(result, Exception):
                future.set_exception(reply_error(result))
            else:
                future.set_result(result)
        return True

    def _keep_unwritten_acks(self, batch: list[Call]) -> None:
        """Acks of a batch that never reached the socket go back to the ledger (one written
        may have run: it is not repeated, as counting a message off twice would let its
        channel hold more than its capacity)."""
        if self._written:
            return
        for script, keys, args, _ in batch:
            if script is None:
                self.ledger.restore(keys[0], args[0])

    async def _execute(self, batch: list[Call]) -> list[Any]:
        commands, spans = assemble(batch)
        packed = pack_commands(commands)
        connection = self._batch_connection
        if self._unread and not connection.connected:
            self._unread = 0  # owed by a connection that is gone: send() makes a new one
        try:
            if not connection.write_now(packed):
                await connection.send(packed)
            self._written = True
            replies = await self._read_replies(len(commands))
        except CONNECTION_ERRORS:
            # A pooled connection goes stale when the server restarts; a restarted server ran
            # none of these commands, so one immediate retry on a fresh connection is safe.
            self._unread = 0  # went with the old connection
            await connection.send(packed)
            self._written = True
            replies = await connection.read(len(commands))
        return regroup(batch, spans, replies)

    async def _read_replies(self, count: int) -> list[Any]:
        """This batch's ``count`` replies, after those owed for acks written on their own."""
        owed = self._unread
        if not owed:
            return await self._batch_connection.read(count)
        try:
            replies = await self._batch_connection.read(owed + count)
        except BaseException:
            self._unread = 0  # the connection was dropped (read() does on any failure)
            raise
        self._unread = 0
        for reply in replies[:owed]:
            if isinstance(reply, Exception):
                _report_failure(reply_error(reply))
        return replies[owed:]

    async def settle(self) -> None:
        """Wait until every queued call (acks and posts included) has been sent."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def close(self) -> None:
        """Write what is queued (acks in the ledger included), then close the connections."""
        if self._acks_timer is not None:
            self._acks_timer.cancel()  # what it would write is written here
            self._acks_timer = None
        await self.settle()
        if self.ledger:
            self._start_flusher()
            try:
                await asyncio.wait_for(self.settle(), ACK_WRITE_TIMEOUT)
            except asyncio.TimeoutError:
                logger.info("acks for %s not written on close (timeout)", self.spec.describe())
        if self._unread and not self._batch_connection.connected:
            self._unread = 0
        if self._unread:
            # In step before the connection goes back to the pool (or dropped, if that fails).
            try:
                await asyncio.wait_for(self._read_replies(0), ACK_WRITE_TIMEOUT)
            except _CLOSE_READ_ERRORS:
                await self._batch_connection.disconnect()
        await self._batch_connection.release()
        await self.client.aclose()


def _one_waiter_at_most(batch: list[Call]) -> bool:
    """Whether at most one call of ``batch`` has a caller waiting (acks and posts have none)."""
    waiters = 0
    for call in batch:
        if call[3] is not None:
            waiters += 1
            if waiters > 1:
                return False
    return True


def _report_failure(error: BaseException) -> None:
    # A lost ack costs capacity until the inbox's counters expire (after `expiry` idle).
    logger.warning("background Redis call failed: %s", error)
