"""Receive side: one reader per Redis queue per event loop, demultiplexing to local waiters.

Rules of this file:

- The only destructive Redis operation is ``LPOP``, which never blocks. Waiting is done by
  ``BLMOVE q q LEFT LEFT``, which moves the head onto itself: it blocks until the queue is
  non-empty and changes nothing. A *round* is ``BLMOVE``, ``LPOP q count``, ``TIME`` written
  together on one connection, so Redis pops the moment the wait ends (and a connection lost
  while waiting loses nothing); entries older than ``expiry`` by the server's clock are dropped.
- A reader task is never cancelled by a cancelled ``receive()``. An entry popped for a waiter
  that has gone is kept in the ``Backlog`` for the next ``receive()`` of that channel.
- A reader task that is cancelled (its event loop is ending: ``asyncio.run``, and so
  ``async_to_sync``, cancels every task first; or the layer is closing) reads back the rounds
  still on the wire before it stops, waking each blocked wait with ``CLIENT UNBLOCK``: what
  their pops took goes to the backlog, which belongs to the layer, not to the loop. Replies are
  read one at a time with a cancellation-safe read, so the cancellation itself never leaves the
  connection out of step.
- How a reader pops is its subclass's: ``ChannelReader`` (channel_reader.py) for a normal
  channel, ``InboxReader`` (inbox_reader.py) for a process inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from .backlog import Backlog
from .connection import DedicatedConnection
from .errors import LayerRefused
from .keys import entry_channel, entry_payload, entry_sent
from .shard import CONNECTION_ERRORS, Shard

__all__ = ["RECEIVE_ERRORS", "QueueReader"]

logger = logging.getLogger("distributed_asgi.layers")

# What makes a reader back off and retry instead of failing its receivers.
RECEIVE_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, ResponseError, LayerRefused)
_READ_BACK_ERRORS: tuple[type[Exception], ...] = (asyncio.TimeoutError, *RECEIVE_ERRORS)
# How long an idle reader keeps its task and connection for the next receive(): a process
# that receives in a loop (every consumer does) then pays for neither on each message.
LINGER = 2.0
# How long a stopping reader may spend reading back its rounds, and how long it waits for one
# round it woke before waking it again (a wait that had not started blocking yet).
READ_BACK_TIMEOUT = 2.0
UNBLOCK_WAIT = 0.2


class QueueReader:
    """Waiters of one queue in one event loop; subclasses decide how to pop."""

    def __init__(
        self,
        shard: Shard,
        queue_key: str,
        *,
        expiry: float,
        block_timeout: float,
        backlog: Backlog | None = None,
    ) -> None:
        self.shard = shard
        self.queue_key = queue_key
        self.expiry = expiry
        self.block_timeout = block_timeout
        self.backlog = backlog if backlog is not None else Backlog(expiry)
        self.loop = asyncio.get_running_loop()
        self._waiters: dict[str, deque[asyncio.Future[bytes]]] = {}
        # Waiters not yet given an entry nor cancelled: kept as a count, as the reader asks on
        # every round (a count of 10,000 waiting connections must not cost 10,000 steps).
        self._live = 0
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._last_sweep = time.monotonic()
        self._closed = False
        self._stopping = False  # the task was cancelled and is reading back its rounds
        self._in_flight = 0  # rounds written and not yet read
        self._partial: list[Any] = []  # replies read so far of the oldest round in flight
        self._connection: DedicatedConnection | None = None  # the task's, while it runs
        # Cluster only: finds the shard that serves queue_key now, after a redirect or a lost
        # node (the slot may have moved); None where the placement never changes.
        self.relocate: Callable[[], Awaitable[Shard]] | None = None
        self.backlog.attach(self)

    async def get(self, channel: str) -> bytes:
        """The next payload for ``channel``. Cancellation-safe: nothing popped is lost."""
        while True:
            entry = self._take_buffered(channel)
            if entry is not None:
                return self._delivered(channel, entry)
            future: asyncio.Future[bytes] = self.loop.create_future()
            waiters = self._waiters.setdefault(channel, deque())
            waiters.append(future)
            self._live += 1
            self._wakeup.set()
            if self._task is None or self._task.done():
                self._task = self.loop.create_task(self._run())
            try:
                entry = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self.backlog.put(channel, future.result(), self, front=True)
                raise
            finally:
                # A future with a result was taken off the waiters by whoever resolved it; one
                # cancelled is still there (removing it scans them: only on cancellation).
                if future.cancelled():  # else the reader resolved it, and counted it off
                    self._live -= 1
                    if future in waiters:
                        waiters.remove(future)
                if not waiters and self._waiters.get(channel) is waiters:
                    del self._waiters[channel]
            return self._delivered(channel, entry)

    def notify(self, channel: str) -> bool:
        """Called from any thread: another loop's reader left an entry of ``channel`` in the
        backlog, which a waiter here may want. False when this reader's loop is closed."""
        return self._call_in_loop(self._hand_over, channel)

    def turn_free(self) -> bool:
        """Called from any thread: another loop's reader ended its turn to pop (backlog.py).
        False when this reader's loop is closed."""
        return self._call_in_loop(self._turn_freed)

    def _call_in_loop(self, callback: Callable[..., None], *args: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    def _turn_freed(self) -> None:
        """Another loop's reader ended its turn (an ``InboxReader`` may be waiting for it)."""

    def waiting(self) -> int:
        return self._live

    def gone(self) -> bool:
        # Its loop closed: it can do nothing more. A reader being closed (``_closed``) is not
        # gone yet: it may still be reading back pops, which must reach the backlog before
        # another reader's turn pops anything newer.
        return self.loop.is_closed()

    def _hand_over(self, channel: str) -> None:
        waiters = self._waiters.get(channel)
        while waiters:
            if waiters[0].done():
                waiters.popleft()
                continue
            entry = self._take_buffered(channel)
            if entry is None:
                return
            waiters.popleft().set_result(entry)
            self._live -= 1

    def _delivered(self, channel: str, entry: bytes) -> bytes:
        return entry_payload(entry)

    def _dropped(self, channel: str, entry: bytes) -> None:
        """An entry of ``channel`` expired (in Redis or in the backlog)."""

    def _take_buffered(self, channel: str) -> bytes | None:
        return self.backlog.take(channel, self._dropped)

    def _waiting(self) -> int:
        return self._live

    async def _run(self) -> None:
        raise NotImplementedError

    async def _linger(self) -> bool:
        """Wait a little for the next waiter; False when none came."""
        self._wakeup.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), LINGER)
        return self._waiting() > 0

    def _round(self, count: int) -> list[tuple[Any, ...]]:
        # BLMOVE takes fractional seconds (Redis >= 6.2).
        wait = ("BLMOVE", self.queue_key, self.queue_key, "LEFT", "LEFT", self.block_timeout)
        return [wait, ("LPOP", self.queue_key, count), ("TIME",)]

    async def _read_round(self, connection: DedicatedConnection) -> list[Any]:
        """The replies of the oldest round in flight. A cancelled call keeps the replies it
        had read (and redis-py the part of one it had), so the next call goes on from there."""
        await connection.read_into(self._partial, 3)
        return self._round_read()

    def _round_read(self) -> list[Any]:
        replies, self._partial = self._partial, []
        self._in_flight -= 1
        return replies

    def _entries(self, replies: list[Any]) -> list[bytes]:
        """The live entries of one round's replies (raises what the pop raised)."""
        popped, now = replies[1], replies[2]
        if isinstance(popped, Exception):
            raise popped
        if not popped:
            return []
        if isinstance(now, Exception):
            raise now
        cutoff = int(now[0]) * 1000 + int(now[1]) // 1000 - int(self.expiry * 1000)
        live = []
        for entry in popped:
            sent = entry_sent(entry)
            if sent is None:
                logger.warning("dropped a malformed entry from %s", self.queue_key)
            elif sent < cutoff:
                self._dropped(entry_channel(entry), entry)
            else:
                live.append(entry)
        return live

    def _dispatch(self, entry: bytes) -> None:
        channel = entry_channel(entry)
        if self.backlog.holds(channel):
            # Older entries of the channel wait there (another loop's reader popped them):
            # this one goes behind them, and the waiters here take the oldest first.
            self.backlog.put(channel, entry, self)
            self._hand_over(channel)
            return
        waiters = self._waiters.get(channel)
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(entry)
                self._live -= 1
                return
        self.backlog.put(channel, entry, self)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.expiry:
            self._last_sweep = now
            self.backlog.sweep(self._dropped)

    async def _backoff(self, exc: BaseException, delay: float) -> float:
        if self.relocate is not None:
            shard = self.shard
            with contextlib.suppress(*RECEIVE_ERRORS):
                self.shard = await self.relocate()
            if self.shard is not shard:
                logger.info("%s moved to %s", self.queue_key, self.shard.spec.describe())
                return 0.05  # retry at once on the node that serves the key now
        if isinstance(exc, (ResponseError, LayerRefused)):
            logger.error("receive from %s failed: %s", self.queue_key, exc)
        else:
            self.shard.failed(exc)
        await asyncio.sleep(delay)
        return min(delay * 2, 1.0)

    async def _give_back(self, connection: DedicatedConnection, client_id: int | None) -> None:
        """The task was cancelled: read back the rounds still on the wire, so what their pops
        take is dispatched (to the backlog when nobody here waits) instead of lost."""
        self._stopping = True
        if client_id is None or not (self._in_flight or self._partial):
            return
        try:
            await asyncio.wait_for(self._read_back(connection, client_id), READ_BACK_TIMEOUT)
        except _READ_BACK_ERRORS as exc:
            logger.warning(
                "could not read back %d pop(s) of %s before stopping (their messages are lost "
                "if they took any): %s",
                self._in_flight,
                self.queue_key,
                str(exc) or type(exc).__name__,
            )
            await connection.disconnect()
            self._in_flight, self._partial = 0, []

    async def _read_back(self, connection: DedicatedConnection, client_id: int) -> None:
        while self._in_flight:
            # The oldest round may be blocked in its wait: wake it, its pop then runs at once.
            await self.shard.command("CLIENT", "UNBLOCK", client_id)
            try:
                replies = await asyncio.wait_for(self._read_round(connection), UNBLOCK_WAIT)
            except asyncio.TimeoutError:
                continue  # its wait had not started blocking when it was woken: wake it again
            for entry in self._entries(replies):
                self._dispatch(entry)

    async def close(self) -> None:
        """Stop the task (it reads back what is on the wire first) and fail local waiters."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            if not self._stopping:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.cancel()
        self._waiters.clear()
        self.backlog.detach(self)

    def abandon(self) -> None:
        """The loop closed without stopping this reader (no I/O is possible any more): shut
        its connection's socket, so the rounds still queued there stop popping."""
        self._closed = True
        if self._connection is not None:
            self._connection.shutdown()
        self.backlog.detach(self)
