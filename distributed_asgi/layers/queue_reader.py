"""Receive side: one reader per Redis queue per process, demultiplexing to local waiters.

Rules of this file:

- The only destructive Redis operation is ``LPOP``, which never blocks. Waiting is done by
  ``BLMOVE q q LEFT LEFT``, which moves the head onto itself: it blocks until the queue is
  non-empty and changes nothing. A *round* is ``BLMOVE``, ``LPOP q count``, ``TIME`` written
  together on one connection, so Redis pops the moment the wait ends (and a connection lost
  while waiting loses nothing); entries older than ``expiry`` by the server's clock are dropped.
- A reader task is never cancelled by a cancelled ``receive()``. An entry popped for a waiter
  that has gone is kept in a local buffer for the next ``receive()`` of that channel.
- ``ChannelReader`` (a normal channel, shared with other processes) pops only as many entries
  as there are local waiters, one round at a time: work stays in Redis for others, and what a
  cancelled waiter leaves behind is put back at the head of the queue when nobody here waits.
- ``InboxReader`` (all ``new_channel()`` channels of one prefix: every entry is this
  process's) keeps several rounds in flight, written together, so a stream of messages costs a
  fraction of a write each. Its entries stay counted against their channel's capacity until
  ``receive()`` returns them (then they are ACKed), so buffering here never defeats capacity.
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

from .connection import DedicatedConnection, pack_commands
from .scripts import FORGET_IDLE, REQUEUE
from .shard import CONNECTION_ERRORS, Shard

__all__ = ["ChannelReader", "InboxReader", "QueueReader"]

logger = logging.getLogger("distributed_asgi.layers")

# What makes a reader back off and retry instead of failing its receivers.
RECEIVE_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, ResponseError)
INBOX_BATCH = 100  # entries one inbox round may pop
INBOX_DEPTH = 16  # inbox rounds kept in flight: topped up with one write when down to one
# How long an idle reader keeps its task and connection for the next receive(): a process
# that receives in a loop (every consumer does) then pays for neither on each message.
LINGER = 2.0
# Acked channels are checked for zero counters (and forgotten) in batches of this many.
FORGET_BATCH = 1000
# How long close() waits for a pop it woke with CLIENT UNBLOCK to come back.
CLOSE_ROUND_TIMEOUT = 1.0


class QueueReader:
    """Waiters and buffers of one queue; subclasses decide how to pop."""

    def __init__(
        self,
        shard: Shard,
        queue_key: str,
        *,
        expiry: float,
        block_timeout: float,
    ) -> None:
        self.shard = shard
        self.queue_key = queue_key
        self.expiry = expiry
        self.block_timeout = block_timeout
        # channel -> entries (monotonic time popped, raw entry)
        self._buffers: dict[str, deque[tuple[float, bytes]]] = {}
        self._waiters: dict[str, deque[asyncio.Future[bytes]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._last_sweep = time.monotonic()
        self._closed = False
        # Cluster only: finds the shard that serves queue_key now, after a redirect or a lost
        # node (the slot may have moved); None where the placement never changes.
        self.relocate: Callable[[], Awaitable[Shard]] | None = None

    async def get(self, channel: str) -> bytes:
        """The next payload for ``channel``. Cancellation-safe: nothing popped is lost."""
        while True:
            entry = self._take_buffered(channel)
            if entry is not None:
                return self._delivered(channel, entry)
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(channel, deque())
            waiters.append(future)
            self._wakeup.set()
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run())
            try:
                entry = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._buffers.setdefault(channel, deque()).appendleft(
                        (time.monotonic(), future.result())
                    )
                raise
            finally:
                if future in waiters:
                    waiters.remove(future)
                if not waiters and self._waiters.get(channel) is waiters:
                    del self._waiters[channel]
            return self._delivered(channel, entry)

    def _delivered(self, channel: str, entry: bytes) -> bytes:
        return _payload(entry)

    def _dropped(self, channel: str) -> None:
        """An entry of ``channel`` expired in the local buffer."""

    def _take_buffered(self, channel: str) -> bytes | None:
        buffer = self._buffers.get(channel)
        if not buffer:
            return None
        cutoff = time.monotonic() - self.expiry
        entry = None
        while buffer:
            popped_at, candidate = buffer.popleft()
            if popped_at >= cutoff:
                entry = candidate
                break
            self._dropped(channel)
        if not buffer:
            del self._buffers[channel]
        return entry

    def _waiting(self) -> int:
        return sum(1 for ws in self._waiters.values() for f in ws if not f.done())

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
            sent = entry[:13]
            if not sent.isdigit() or entry.find(b"\n", 13) < 0:
                logger.warning("dropped a malformed entry from %s", self.queue_key)
            elif int(sent) < cutoff:
                self._dropped(_channel(entry))
            else:
                live.append(entry)
        return live

    def _dispatch(self, entry: bytes) -> None:
        channel = _channel(entry)
        waiters = self._waiters.get(channel)
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(entry)
                return
        self._buffers.setdefault(channel, deque()).append((time.monotonic(), entry))

    def _sweep(self) -> None:
        """Forget buffered entries nobody received before they expired (an inbox can collect
        late replies for channels its process no longer reads)."""
        now = time.monotonic()
        if now - self._last_sweep < self.expiry:
            return
        self._last_sweep = now
        for channel in list(self._buffers):
            buffer = self._buffers[channel]
            while buffer and buffer[0][0] < now - self.expiry:
                buffer.popleft()
                self._dropped(channel)
            if not buffer:
                del self._buffers[channel]

    async def _backoff(self, exc: BaseException, delay: float) -> float:
        if self.relocate is not None:
            shard = self.shard
            with contextlib.suppress(*RECEIVE_ERRORS):
                self.shard = await self.relocate()
            if self.shard is not shard:
                logger.info("%s moved to %s", self.queue_key, self.shard.spec.describe())
                return 0.05  # retry at once on the node that serves the key now
        if isinstance(exc, ResponseError):
            logger.error("receive from %s failed: %s", self.queue_key, exc)
        else:
            self.shard.failed(exc)
        await asyncio.sleep(delay)
        return min(delay * 2, 1.0)

    def pending_local(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def clear(self) -> None:
        self._buffers.clear()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.cancel()
        self._waiters.clear()


class ChannelReader(QueueReader):
    """A normal channel: pop only for local waiters, give back what nobody here took."""

    def __init__(
        self, shard: Shard, queue_key: str, *, expiry: float, block_timeout: float
    ) -> None:
        super().__init__(shard, queue_key, expiry=expiry, block_timeout=block_timeout)
        self._popping_id: int | None = None  # server id of the connection while a round is out

    async def _run(self) -> None:
        # The outer loop only turns again when a cluster slot moved to another node.
        while not self._closed:
            if await self._pop_from(self.shard):
                return

    async def _pop_from(self, shard: Shard) -> bool:
        """Pop for local waiters from ``shard``; True when done, False when the key moved."""
        connection = DedicatedConnection(shard.client)
        in_round = False
        try:
            client_id = await connection.client_id()
            delay = 0.05
            while not self._closed:
                waiting = self._waiting()
                if not waiting:
                    if self._buffers:
                        await self._requeue()
                        continue
                    if not await self._linger():
                        return True
                    continue
                try:
                    in_round, self._popping_id = True, client_id
                    entries = self._entries(await connection.execute(self._round(waiting)))
                    in_round, self._popping_id = False, None
                except RECEIVE_ERRORS as exc:
                    delay = await self._backoff(exc, delay)
                    if self.shard is not shard:
                        return False
                    continue
                delay = 0.05
                shard.succeeded()
                for entry in entries:
                    self._dispatch(entry)
            return True
        except RECEIVE_ERRORS as exc:  # CLIENT ID failed: the server is away; try again
            await self._backoff(exc, 0.05)
            return self._closed
        finally:
            self._popping_id = None
            if in_round:
                # Cut off mid-round: its replies must never reach another user of the pool.
                await connection.disconnect()
            await asyncio.shield(connection.release())

    async def close(self) -> None:
        """Stop, first letting a pop that is out come back: what it took is put back on the
        queue for other processes instead of vanishing with the connection."""
        self._closed = True
        task, popping_id = self._task, self._popping_id
        if task is not None and not task.done() and popping_id is not None:
            with contextlib.suppress(*RECEIVE_ERRORS):
                await self.shard.client.client_unblock(popping_id)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), CLOSE_ROUND_TIMEOUT)
        await super().close()
        if self._buffers:
            await self._requeue()

    async def _requeue(self) -> None:
        entries = [entry for buffer in self._buffers.values() for _, entry in buffer]
        self._buffers.clear()
        try:
            await self.shard.call(REQUEUE, [self.queue_key], [int(self.expiry * 1000), *entries])
        except Exception as exc:
            logger.warning(
                "could not put %d undelivered message(s) back on %s: %s",
                len(entries),
                self.queue_key,
                exc,
            )


class InboxReader(QueueReader):
    """A process inbox: rounds kept in flight, entries ACKed when received."""

    def __init__(
        self,
        shard: Shard,
        queue_key: str,
        counter_key: str,
        *,
        expiry: float,
        block_timeout: float,
    ) -> None:
        super().__init__(shard, queue_key, expiry=expiry, block_timeout=block_timeout)
        self.counter_key = counter_key
        self._in_flight = 0  # rounds written and not yet read
        self._packed_round = pack_commands(self._round(INBOX_BATCH))
        self._acked: set[str] = set()  # channels acked since the last FORGET_IDLE
        self._last_forget = time.monotonic()

    def _delivered(self, channel: str, entry: bytes) -> bytes:
        self._dropped(channel)
        return _payload(entry)

    async def delete_keys(self) -> None:
        """Remove this inbox's queue and counters from Redis, once its process is done with
        them: nobody else reads them, and keys left to expire would outlive the process."""
        await self.shard.settle()  # acks still queued would re-create the counters
        try:
            await self.shard.client.unlink(self.queue_key, self.counter_key)
        except RECEIVE_ERRORS as exc:
            logger.info("could not delete %s on close (it expires): %s", self.queue_key, exc)

    def _dropped(self, channel: str) -> None:
        self.shard.ack(self.counter_key, channel)
        self._acked.add(channel)

    def _sweep(self) -> None:
        super()._sweep()
        if self._acked and (
            len(self._acked) >= FORGET_BATCH or time.monotonic() - self._last_forget > self.expiry
        ):
            # Channels whose counters reached 0 leave the counter hash, so a long-lived inbox
            # does not keep one field for every channel it ever served. In batches as soon as
            # there are enough: a channel per request (the edge's reply channels) would
            # otherwise pile up for a whole expiry period, here and in Redis.
            self._last_forget = time.monotonic()
            channels, self._acked = list(self._acked), set()
            self.shard.post(FORGET_IDLE, [self.counter_key], channels)

    async def _run(self) -> None:
        delay = 0.05
        while not self._closed:
            connection = DedicatedConnection(self.shard.client)
            self._in_flight = 0
            try:
                await self._serve(connection)
                return
            except RECEIVE_ERRORS as exc:
                # The connection is gone with its rounds; start over on a new one.
                delay = await self._backoff(exc, delay)
            finally:
                if self._closed or self._in_flight:
                    # Rounds still queued on this connection would pop entries nobody reads.
                    await connection.disconnect()
                await connection.release()

    async def _serve(self, connection: DedicatedConnection) -> None:
        """Keep rounds in flight until nobody has waited for LINGER seconds."""
        client_id = await connection.client_id()
        idle_since: float | None = None
        while not self._closed:
            if self._waiting():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            stopping = idle_since is not None and time.monotonic() - idle_since > LINGER
            if stopping and not self._in_flight:
                return
            if stopping:
                # Wake the blocked wait so the rounds still queued on the connection return
                # now; their pops run and whatever they take is buffered, not lost.
                await self.shard.client.client_unblock(client_id)
            elif self._in_flight <= 1:
                refill = INBOX_DEPTH - self._in_flight
                await connection.send(self._packed_round * refill)
                self._in_flight += refill
            replies = await connection.read(3)
            self._in_flight -= 1
            entries = self._entries(replies)
            self.shard.succeeded()
            for entry in entries:
                self._dispatch(entry)
            self._sweep()
            if entries:
                # Let the receivers just woken run (and write their sends) before this task
                # writes its next rounds.
                await asyncio.sleep(0)


def _channel(entry: bytes) -> str:
    return entry[13 : entry.find(b"\n", 13)].decode("ascii", "replace")


def _payload(entry: bytes) -> bytes:
    return entry[entry.find(b"\n", 13) + 1 :]
