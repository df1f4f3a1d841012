"""A pool connection held by one user for pipelined commands, bypassing per-call pool work.

redis-py's ``client.evalsha()`` and ``pipeline().execute()`` take a connection from the pool
and give it back on every call, with locking and bookkeeping that cost more than the loopback
round trip itself. The layer's two hot paths each have exactly one user at a time (the shard's
batcher, and each queue reader), so each keeps one connection and writes its commands to it
directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from .resp import ReplyReader

__all__ = ["DedicatedConnection", "pack_commands"]


_WRITE_HIGH_WATER = 256 * 1024


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def pack_commands(commands: Sequence[Sequence[Any]]) -> bytes:
    """RESP-encode commands: str as UTF-8, numbers as their repr, bytes as they are.

    Written here because redis-py's general packer costs more than a loopback round trip on
    small commands, and the layer sends nothing but these few argument types. A str argument
    (a command's name, a queue's key) is packed once and then taken from ``_PACKED_STRS``:
    most of them repeat in every batch.
    """
    out: list[bytes] = []
    append = out.append
    packed_strs = _PACKED_STRS
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for value in command:
            kind = type(value)  # exact types first: the common ones without a call
            if kind is str:
                data = packed_strs.get(value)
                if data is None:
                    data = _packed_str(value)
                append(data)
                continue
            if kind is bytes:
                data = value
            elif kind is int:
                data = b"%d" % value
            else:
                data = _arg(value)
            if len(data) < 4096:  # one small copy beats three list items
                append(b"$%d\r\n%b\r\n" % (len(data), data))
            else:
                append(b"$%d\r\n" % len(data))
                append(data)
                append(b"\r\n")
    return b"".join(out)


# str arguments as RESP bulk strings, by value; emptied when full, so names made per request
# (a claim's key) cannot grow it without bound.
_PACKED_STRS: dict[str, bytes] = {}
_PACKED_STRS_KEPT = 4096


def _packed_str(value: str) -> bytes:
    raw = value.encode()
    data = b"$%d\r\n%b\r\n" % (len(raw), raw)
    if len(raw) <= 256:  # keys and names, not payloads
        if len(_PACKED_STRS) >= _PACKED_STRS_KEPT:
            _PACKED_STRS.clear()
        _PACKED_STRS[value] = data
    return data


class DedicatedConnection:
    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: AbstractConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replies: ReplyReader | None = None  # of the connection's current stream

    def _reply_reader(self, connection: AbstractConnection) -> ReplyReader:
        replies = self._replies
        stream = getattr(connection, "_reader", None)
        if replies is not None and replies.belongs_to(stream):
            return replies
        if not isinstance(stream, asyncio.StreamReader):
            raise RedisConnectionError("Connection closed by server.")
        parser = getattr(connection, "_parser", None)
        parse_error = getattr(parser, "parse_error", None) or ResponseError
        writer = getattr(connection, "_writer", None)
        transport = writer.transport if writer is not None else None
        if transport is None:  # pragma: no cover - a redis-py without the stream writer
            self._replies = replies = ReplyReader(stream, parse_error)
        else:
            self._replies = replies = ReplyReader(stream, parse_error, transport.abort)
        return replies

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write and read one reply each, in order.

        A command's error reply is returned in its place as a ``ResponseError``; a lost
        connection raises (and is reconnected by the next call).
        """
        await self.send(commands)
        return await self.read(len(commands))

    @property
    def connected(self) -> bool:
        """Whether the connection is up (replies owed on it will come)."""
        connection = self._connection
        return connection is not None and connection.is_connected

    def write_now(self, packed: bytes) -> bool:
        """Write ``packed`` at once if the connection is up and its buffer has room, without a
        coroutine; False to leave it to ``send()``."""
        connection = self._connection
        writer = getattr(connection, "_writer", None)
        if writer is None or connection is None or not connection.is_connected:
            return False
        transport = writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
            return False
        writer.write(packed)
        return True

    async def send(self, commands: Sequence[Sequence[Any]] | bytes) -> None:
        """Write ``commands`` (or their ``pack_commands`` bytes) without reading; ``read()``
        their replies later, in order."""
        connection = self._connection or await self.connect()
        packed = commands if isinstance(commands, bytes) else pack_commands(commands)
        try:
            if not connection.is_connected:
                await connection.connect()  # type: ignore[no-untyped-call]
            writer = getattr(connection, "_writer", None)
            if writer is None:  # pragma: no cover - a redis-py without the stream writer
                await connection.send_packed_command(packed, check_health=False)
                return
            # redis-py wraps every write in asyncio.wait_for (a task per command on 3.11);
            # a write that fits the transport buffer needs no waiting at all.
            writer.write(packed)
            if writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
                await asyncio.wait_for(writer.drain(), connection.socket_timeout)
        except GeneratorExit:
            raise  # destroyed with its closed loop (see _gone): no I/O is possible
        except BaseException:
            await connection.disconnect(nowait=True)
            raise

    async def read(self, count: int) -> list[Any]:
        connection = self._connection or await self.connect()
        try:
            replies = self._reply_reader(connection)
            # Replies written together arrive together: only the first wait needs the socket
            # timeout (whose bookkeeping is not free).
            timeout = connection.socket_timeout
            out: list[Any] = []
            replies.take_into(out, count)
            while len(out) < count:
                await replies.fill(timeout)
                timeout = None
                replies.take_into(out, count)
        except GeneratorExit:
            raise
        except BaseException:
            # Cancelled or failed between a write and its replies: the stream is out of step.
            await connection.disconnect(nowait=True)
            raise
        return out

    async def read_into(self, replies: list[Any], count: int) -> None:
        """Read replies (a command's error reply as a ``ResponseError``) into ``replies`` until
        it holds ``count``.

        Unlike ``read()``, a cancelled call keeps the connection: the replies read so far stay
        in ``replies``, and the reply reader keeps what had arrived of the next ones (resp.py),
        so calling again with the same list goes on in step. A queue reader relies on it to
        read back the pops still on the wire when its event loop ends.
        """
        connection = self._connection or await self.connect()
        try:
            reader = self._reply_reader(connection)
            # Replies written together arrive together: only the first wait needs the socket
            # timeout (whose bookkeeping is not free).
            timeout = None if replies else connection.socket_timeout
            reader.take_into(replies, count)
            while len(replies) < count:
                await reader.fill(timeout)
                timeout = None
                reader.take_into(replies, count)
        except (asyncio.CancelledError, GeneratorExit):
            raise  # in step (or destroyed with its closed loop: no I/O is possible)
        except BaseException:
            await connection.disconnect(nowait=True)
            raise

    async def connect(self) -> AbstractConnection:
        if self._connection is None:
            self._loop = asyncio.get_running_loop()
            self._connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return self._connection

    def _gone(self) -> bool:
        """Whether the loop this connection was made in is closed. A loop closed with its tasks
        pending leaves their coroutines to be destroyed by the garbage collector, at any
        moment, in any thread: their clean-up must not touch the connection then."""
        return self._loop is not None and self._loop.is_closed()

    async def client_id(self) -> int:
        """This connection's server-side id (for ``CLIENT UNBLOCK``); connects if needed."""
        (reply,) = await self.execute([("CLIENT", "ID")])
        return int(reply)

    def shutdown(self) -> None:
        """Shut the socket down at once, without the event loop (its loop is closed): the
        server then drops this client, and with it any command still queued or blocked."""
        writer = getattr(self._connection, "_writer", None)
        sock = writer.get_extra_info("socket") if writer is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def disconnect(self) -> None:
        if self._connection is not None and not self._gone():
            await self._connection.disconnect(nowait=True)

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not self._gone():
            try:
                await self._pool.release(connection)
            except (KeyError, ValueError):
                await connection.disconnect(nowait=True)

    async def __aenter__(self) -> DedicatedConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.release())
