"""``ChannelReader``: the reader of a normal channel, shared with other processes.

It pops only as many entries
as there are local waiters, one round at a time: work stays in Redis for others, and what a
cancelled waiter leaves behind is put back at the head of the queue when nobody here waits
(and when the reader stops).
"""

from __future__ import annotations

import asyncio

from .connection import DedicatedConnection
from .queue_reader import RECEIVE_ERRORS, QueueReader, logger
from .shard import Shard

__all__ = ["ChannelReader"]


class ChannelReader(QueueReader):
    """A normal channel: pop only for local waiters, give back what nobody here took."""

    async def _run(self) -> None:
        self._stopping = False
        # The outer loop only turns again when a cluster slot moved to another node.
        while not self._closed:
            if await self._pop_from(self.shard):
                return

    async def _pop_from(self, shard: Shard) -> bool:
        """Pop for local waiters from ``shard``; True when done, False when the key moved."""
        connection = self._connection = DedicatedConnection(shard.client)
        self._in_flight, self._partial = 0, []
        client_id: int | None = None
        try:
            client_id = await connection.client_id()
            delay = 0.05
            while not self._closed:
                waiting = self._waiting()
                if not waiting:
                    if self.backlog:
                        await self._requeue(connection)
                        continue
                    if not await self._linger():
                        return True
                    continue
                try:
                    await connection.send(self._round(waiting))
                    self._in_flight = 1
                    entries = self._entries(await self._read_round(connection))
                except RECEIVE_ERRORS as exc:
                    # A round cut off by a lost server went with its connection (send and
                    # read_into disconnect on failure): nothing of it is left to read back,
                    # nor a partial reply for the next round to read on from.
                    self._in_flight, self._partial = 0, []
                    delay = await self._backoff(exc, delay)
                    if self.shard is not shard:
                        return False
                    continue
                delay = 0.05
                shard.succeeded()
                for entry in entries:
                    self._dispatch(entry)
            return True
        except asyncio.CancelledError:
            # Stopping (the loop ends or the layer closes): whatever the round took, and what
            # cancelled waiters left, goes back on the queue for other processes.
            await self._give_back(connection, client_id)
            await self._requeue(connection)
            raise
        except RECEIVE_ERRORS as exc:  # CLIENT ID failed: the server is away; try again
            await self._backoff(exc, 0.05)
            return self._closed
        finally:
            if self._in_flight or self._partial:
                # Cut off mid-round: its replies must never reach another user of the pool.
                await connection.disconnect()
            self._connection = None
            if not self.loop.is_closed():  # else destroyed with its loop: no I/O (connection.py)
                await asyncio.shield(connection.release())

    async def close(self) -> None:
        await super().close()
        if self.backlog:  # left by waiters cancelled while no task was running
            async with DedicatedConnection(self.shard.client) as connection:
                await self._requeue(connection)

    async def _requeue(self, connection: DedicatedConnection) -> None:
        """Put the backlog back at the head of the queue, in its order, for any receiver."""
        entries = self.backlog.take_all()
        if not entries:
            return
        commands = [
            ("LPUSH", self.queue_key, *reversed(entries)),
            ("PEXPIRE", self.queue_key, int(self.expiry * 1000)),
        ]
        try:
            pushed, _ = await connection.execute(commands)
            if isinstance(pushed, Exception):
                raise pushed
        except RECEIVE_ERRORS as exc:
            logger.warning(
                "could not put %d undelivered message(s) back on %s: %s",
                len(entries),
                self.queue_key,
                exc,
            )
