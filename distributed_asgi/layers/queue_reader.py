"""Receive side: one reader per Redis queue per process, demultiplexing to local waiters.

Rules of this file:

- The only destructive Redis operation is the POP script, which never blocks. Waiting is done
  by ``BLMOVE q q LEFT LEFT``, which moves the head onto itself: it blocks until the queue is
  non-empty and changes nothing. Both go in one pipeline on one connection, so Redis runs the
  pop the moment the wait ends: one round trip, and a connection lost while waiting loses
  nothing.
- The reader task is never cancelled by a cancelled ``receive()``. An entry popped for a waiter
  that has gone is kept in a local buffer for the next ``receive()`` of that channel; for a
  normal channel it is put back at the head of the Redis queue when nobody here waits any more,
  so another process can take it.
- A process inbox (all ``new_channel()`` channels of one prefix) is popped in batches: every
  entry in it is this process's. A normal channel is shared with other processes, so it is
  popped only as many entries as there are local waiters: work stays in Redis for others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from redis.exceptions import ResponseError

from .scripts import POP, REQUEUE
from .shard import CONNECTION_ERRORS, Shard, is_noscript

__all__ = ["QueueReader"]

logger = logging.getLogger("distributed_asgi.layers")

INBOX_BATCH = 100


class QueueReader:
    def __init__(
        self,
        shard: Shard,
        queue_key: str,
        counter_key: str | None,
        *,
        expiry: float,
        block_timeout: float,
    ) -> None:
        self.shard = shard
        self.queue_key = queue_key
        self.counter_key = counter_key  # set for a process inbox
        self.expiry = expiry
        self.block_timeout = block_timeout
        self._keys = [queue_key] if counter_key is None else [queue_key, counter_key]
        # channel -> entries (monotonic time popped, raw entry)
        self._buffers: dict[str, deque[tuple[float, bytes]]] = {}
        self._waiters: dict[str, deque[asyncio.Future[bytes]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_sweep = time.monotonic()

    @property
    def is_inbox(self) -> bool:
        return self.counter_key is not None

    async def get(self, channel: str) -> bytes:
        """The next payload for ``channel``. Cancellation-safe: nothing popped is lost."""
        while True:
            entry = self._take_buffered(channel)
            if entry is not None:
                return _payload(entry)
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(channel, deque())
            waiters.append(future)
            self._ensure_running()
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
            return _payload(entry)

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
        if not buffer:
            del self._buffers[channel]
        return entry

    def _waiting(self) -> int:
        return sum(1 for ws in self._waiters.values() for f in ws if not f.done())

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            waiting = self._waiting()
            if not waiting:
                if not self.is_inbox and self._buffers:
                    await self._requeue()
                    continue
                return
            count = INBOX_BATCH if self.is_inbox else waiting
            try:
                entries = await self._round(count)
            except CONNECTION_ERRORS as exc:
                self.shard.failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            except ResponseError as exc:
                logger.error("receive from %s failed: %s", self.queue_key, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self.shard.succeeded()
            for entry in entries:
                self._dispatch(entry)
            self._sweep()

    async def _round(self, count: int) -> list[bytes]:
        pipe = self.shard.client.pipeline(transaction=False)
        # BLMOVE takes fractional seconds (Redis >= 6.2); redis-py's stub says int.
        pipe.execute_command(
            "BLMOVE", self.queue_key, self.queue_key, "LEFT", "LEFT", self.block_timeout
        )
        pipe.evalsha(POP.sha, len(self._keys), *self._keys, count, int(self.expiry * 1000))
        _, entries = await pipe.execute(raise_on_error=False)
        if is_noscript(entries):
            await self.shard.load_script(POP)
            return []
        if isinstance(entries, Exception):
            raise entries
        return list(entries or [])

    def _dispatch(self, entry: bytes) -> None:
        newline = entry.find(b"\n", 13)
        if newline < 0:
            logger.warning("dropped a malformed entry from %s (no channel)", self.queue_key)
            return
        channel = entry[13:newline].decode("ascii", "replace")
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
            if not buffer:
                del self._buffers[channel]

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

    def pending_local(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def clear(self) -> None:
        self._buffers.clear()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.cancel()
        self._waiters.clear()


def _payload(entry: bytes) -> bytes:
    return entry[entry.find(b"\n", 13) + 1 :]
