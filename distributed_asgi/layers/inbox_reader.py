"""``InboxReader``: the reader of a process inbox, every ``new_channel()`` channel of one prefix.

Every entry is this process's: it keeps several rounds in flight, written together, so a
stream of messages costs a fraction of a write each. Its entries stay counted against their
channel's capacity until ``receive()`` returns them (then they are ACKed), so buffering here
never defeats capacity; a pushed entry (``push()``, keys.py's uncounted entry) took no capacity
and is not ACKed.
Its backlog is shared by the inbox readers of every loop of the layer, and the inbox is popped
by one of them at a time, for all (the backlog's turn): a channel's messages then reach its
receiver in the order they were sent, whichever loop receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from .backlog import Backlog
from .connection import DedicatedConnection, pack_commands
from .keys import entry_counted, entry_payload
from .queue_reader import LINGER, RECEIVE_ERRORS, QueueReader
from .scripts import FORGET_IDLE
from .shard import Shard

__all__ = ["InboxReader"]

INBOX_BATCH = 100  # entries one inbox round may pop
INBOX_DEPTH = 16  # inbox rounds kept in flight: topped up with one write when down to one
# A new connection starts with this many rounds, doubled by each round that pops something: a
# stream reaches the full depth in a few rounds, and a loop that ends after one message (a
# sync caller) has few rounds to read back.
INBOX_FIRST_DEPTH = 2
# Acked channels are checked for zero counters (and forgotten) in batches of this many.
FORGET_BATCH = 1000


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
        backlog: Backlog | None = None,
    ) -> None:
        super().__init__(
            shard, queue_key, expiry=expiry, block_timeout=block_timeout, backlog=backlog
        )
        self.counter_key = counter_key
        self._depth = INBOX_FIRST_DEPTH
        self._packed_round = pack_commands(self._round(INBOX_BATCH))
        self._acked: set[str] = set()  # channels acked since the last FORGET_IDLE
        self._last_forget = time.monotonic()
        self._turn_event = asyncio.Event()  # another loop's reader ended its turn

    def _delivered(self, channel: str, entry: bytes) -> bytes:
        self._dropped(channel, entry)
        return entry_payload(entry)

    def _dropped(self, channel: str, entry: bytes) -> None:
        if entry_counted(entry):  # a pushed entry took no capacity: nothing to give back
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

    def _waiting(self) -> int:
        # In its turn a reader pops for the waiters of every loop.
        return self._live + self.backlog.waiting_elsewhere(self)

    def _turn_freed(self) -> None:
        self._turn_event.set()

    async def _take_turn(self) -> bool:
        """Wait for this reader's turn to pop; False when nobody here waits any more (what
        the reader in its turn pops for them reaches them through the backlog meanwhile)."""
        while not self.backlog.take_turn(self):
            if not self._live:
                return False
            self._turn_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                # Looked at again after LINGER too: a turn whose loop closed is free.
                await asyncio.wait_for(self._turn_event.wait(), LINGER)
        return True

    async def _run(self) -> None:
        if not await self._take_turn():
            return
        try:
            await self._pop_in_turn()
        finally:
            self.backlog.end_turn(self)

    async def _pop_in_turn(self) -> None:
        self._stopping = False
        delay = 0.05
        while not self._closed:
            connection = self._connection = DedicatedConnection(self.shard.client)
            self._in_flight, self._partial = 0, []
            self._depth = INBOX_FIRST_DEPTH
            client_id: int | None = None
            try:
                client_id = await connection.client_id()
                await self._serve(connection, client_id)
                return
            except asyncio.CancelledError:
                await self._give_back(connection, client_id)
                raise
            except RECEIVE_ERRORS as exc:
                # The connection is gone with its rounds; start over on a new one.
                delay = await self._backoff(exc, delay)
            finally:
                if self._in_flight or self._partial:
                    # Rounds still queued on this connection would pop entries nobody reads.
                    await connection.disconnect()
                self._connection = None
                await connection.release()

    async def _serve(self, connection: DedicatedConnection, client_id: int) -> None:
        """Keep rounds in flight until nobody has waited for LINGER seconds."""
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
                await self.shard.command("CLIENT", "UNBLOCK", client_id)
            elif self._in_flight <= 1:
                refill = self._depth - self._in_flight
                # send() does not suspend on a connected connection (rounds stay far below the
                # write buffer's high-water mark): no cancellation falls between write and count.
                await connection.send(self._packed_round * refill)
                self._in_flight += refill
            # _read_round() written out: one coroutine less on every message's path.
            await connection.read_into(self._partial, 3)
            entries = self._entries(self._round_read())
            self.shard.succeeded()
            for entry in entries:
                self._dispatch(entry)
            self._sweep()
            if entries:
                self._depth = min(self._depth * 2, INBOX_DEPTH)
                if self._in_flight <= 1:
                    # Let the receivers just woken run (and write their sends) before this
                    # task writes its next rounds (with rounds left in flight it writes
                    # nothing next, so it goes on to read without giving up its turn).
                    await asyncio.sleep(0)
