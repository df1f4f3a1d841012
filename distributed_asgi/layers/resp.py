"""``ReplyReader``: Redis replies parsed from one buffer, for the layer's dedicated connections.

redis-py's parser awaits a stream read per line of a reply and wraps every reply in a socket
timeout; on the layer's hot paths (a send's reply, a reader's round of three replies) that
costs more than the loopback round trip. This reads what has arrived in one call and parses
every reply it holds synchronously.

Rules of this file:

- The only suspension is the read of more bytes from the connection's stream. Parsing never
  suspends, and a reply leaves the buffer only once it is complete: a cancelled read loses
  nothing, and the next read goes on from the same bytes (the queue readers rely on it, see
  queue_reader.py).
- Completeness is checked without building anything (``_scan``), so a large reply arriving in
  many chunks is built once, not once per chunk.
- Error replies become redis-py's exception classes (its parser's ``parse_error``), returned in
  place of their reply; one that means the connection is unusable (``LOADING``, a redis-py
  ``ConnectionError``) is raised, as redis-py does. RESP2 and RESP3 replies are understood.
- The stream is the connection's: a reader made for one stream is dropped when the connection
  reconnects (``DedicatedConnection`` makes a new one). A wait with a timeout that outlives it
  aborts the connection (one timer per connection, re-armed when it fires, not one per wait)
  and raises redis-py's ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["ReplyReader"]

READ_SIZE = 65536
# Replies in a buffer up to this size are built in one pass even when they turn out to be
# incomplete (the work is then done again); larger ones are scanned for completeness first.
_SMALL = 16384
_CLOSED = "Connection closed by server."

# RESP type bytes.
_BULK, _ARRAY, _INT, _SIMPLE, _ERROR = 36, 42, 58, 43, 45  # $ * : + -
_NULL, _DOUBLE, _BOOL, _BIG, _VERBATIM, _BULK_ERROR = 95, 44, 35, 40, 61, 33  # _ , # ( = !
_MAP, _SET, _PUSH, _ATTRIBUTE = 37, 126, 62, 124  # % ~ > |
_AGGREGATES = {_ARRAY: 1, _SET: 1, _PUSH: 1, _MAP: 2, _ATTRIBUTE: 2}
_BLOBS = (_BULK, _VERBATIM, _BULK_ERROR)


def _scan(buf: bytes | bytearray, pos: int) -> int:
    """The end of the reply at ``pos``, or minus the buffer length it needs at least."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return -(len(buf) + 1)
    kind = buf[pos]
    if kind in _BLOBS:
        size = int(buf[pos + 1 : end])
        if size < 0:
            return end + 2
        stop = end + 2 + size + 2
        return stop if stop <= len(buf) else -stop
    multiple = _AGGREGATES.get(kind)
    if multiple is None:
        return end + 2
    count = int(buf[pos + 1 : end])
    at = end + 2
    buffered = len(buf)
    for _ in range(max(count, 0) * multiple):
        if at < buffered and buf[at] == _BULK:  # the usual item (a pop's entry), without a call
            end = buf.find(b"\r\n", at)
            if end < 0:
                return -(buffered + 1)
            length = int(buf[at + 1 : end])
            at = end + 2 if length < 0 else end + 4 + length
            if at > buffered:
                return -at
            continue
        at = _scan(buf, at)
        if at < 0:
            return at
    if kind == _ATTRIBUTE:  # metadata before the reply it belongs to
        return _scan(buf, at)
    return at


def _bulk_array(buf: bytearray, pos: int, size: int) -> tuple[Any, int] | None:
    """(the array of bulk strings at ``pos``, its end), or (None, minus the buffer length it
    needs) when incomplete; None when it holds anything but bulk strings."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None, -(size + 1)
    count = int(buf[pos + 1 : end])
    at = end + 2
    if count < 0:
        return None, at
    items: list[bytes | None] = []
    for _ in range(count):
        if at >= size:
            return None, -(size + 1)
        if buf[at] != _BULK:
            return None
        end = buf.find(b"\r\n", at)
        if end < 0:
            return None, -(size + 1)
        length = int(buf[at + 1 : end])
        if length < 0:
            items.append(None)
            at = end + 2
            continue
        at = end + 2 + length + 2
        if at > size:
            return None, -at
        items.append(bytes(buf[end + 2 : at - 2]))
    return items, at


class ReplyReader:
    __slots__ = (
        "_abort",
        "_buffer",
        "_deadline",
        "_loop",
        "_need",
        "_parse_error",
        "_pos",
        "_stream",
        "_timed_out",
        "_watchdog",
    )

    def __init__(
        self,
        stream: asyncio.StreamReader,
        parse_error: Callable[[str], Any],
        abort: Callable[[], object] = lambda: None,
    ) -> None:
        """``abort`` closes the connection at once (its transport's ``abort``): how a wait
        that outlived its timeout is ended."""
        self._stream = stream
        self._parse_error = parse_error
        self._abort = abort
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = False
        self._buffer = bytearray()
        self._pos = 0
        self._need = 0  # the buffer length below which the next reply cannot be complete

    def belongs_to(self, stream: object) -> bool:
        return stream is self._stream

    def take_into(self, replies: list[Any], count: int) -> None:
        """Append the replies that have fully arrived to ``replies`` until it holds ``count``.

        One call parses a whole batch's replies: the buffer and the position stay in locals,
        and the reader's state is written back once, when it stops (or before it raises).
        """
        buf = self._buffer
        pos = self._pos
        size = len(buf)
        if size < self._need:
            return
        find = buf.find
        append = replies.append
        wanted = count - len(replies)
        try:
            while wanted > 0 and pos < size:
                kind = buf[pos]
                if kind in (_INT, _BULK, _SIMPLE):
                    # The usual replies (a send's, an ack's, a wait's), built at once.
                    end = find(b"\r\n", pos)
                    if end < 0:
                        self._need = size + 1
                        return
                    at = end + 2
                    if kind == _INT:
                        append(int(buf[pos + 1 : end]))
                    elif kind == _SIMPLE:
                        append(bytes(buf[pos + 1 : end]))
                    else:
                        length = int(buf[pos + 1 : end])
                        if length < 0:
                            append(None)
                        else:
                            at += length + 2
                            if at > size:
                                self._need = at
                                return
                            append(bytes(buf[end + 2 : at - 2]))
                else:
                    reply, at = self._aggregate(buf, pos, size)
                    if at < 0:
                        self._need = -at
                        return
                    if isinstance(reply, RedisConnectionError):
                        pos, self._need = at, 0
                        raise reply
                    append(reply)
                pos = at
                wanted -= 1
            self._need = 0
        finally:
            if pos >= size:
                buf.clear()  # the common case: everything read is used up
                self._pos = 0
            else:
                self._pos = pos

    def _aggregate(self, buf: bytearray, pos: int, size: int) -> tuple[Any, int]:
        """(the reply at ``pos``, its end), or (None, minus the buffer length it needs): any
        reply but the usual simple ones."""
        large = size - pos > _SMALL
        if buf[pos] == _ARRAY:
            if large:
                # Checked complete first: a large one (a burst's pop) arrives in many chunks,
                # and is then built once.
                at = _scan(buf, pos)
                if at < 0:
                    return None, at
            # A pop's entries, TIME's two numbers: bulk strings, in one pass.
            found = _bulk_array(buf, pos, size)
            if found is not None:
                return found
            if large:
                return self._build(buf, pos)  # scanned complete above
        at = _scan(buf, pos)
        if at < 0:
            return None, at
        return self._build(buf, pos)

    async def read(self, timeout: float | None) -> Any:
        """The next reply, waiting for it (at most ``timeout`` seconds when not None)."""
        replies: list[Any] = []
        self.take_into(replies, 1)
        while not replies:
            await self.fill(timeout)
            timeout = None  # only the first wait: what follows arrives with it
            self.take_into(replies, 1)
        return replies[0]

    async def fill(self, timeout: float | None = None) -> None:
        """Read what has arrived (waiting for at least one byte) into the buffer; a wait longer
        than ``timeout`` seconds aborts the connection and raises redis-py's TimeoutError."""
        buf = self._buffer
        if self._pos:
            del buf[: self._pos]  # cheap: a bytearray drops its head without moving the rest
            self._need -= self._pos
            self._pos = 0
        if timeout is not None:
            # One timer per connection, re-armed only when it fires, instead of a timeout
            # context (a timer made and cancelled) around every wait.
            self._deadline = deadline = self._loop.time() + timeout
            if self._watchdog is None:
                self._watchdog = self._loop.call_at(deadline, self._check)
        try:
            data = await self._stream.read(max(READ_SIZE, self._need - len(buf)))
        except OSError as exc:
            self._raise_timed_out()
            raise RedisConnectionError(f"Error while reading from Redis: {exc.args}") from exc
        finally:
            self._deadline = None
        if not data:
            self._raise_timed_out()
            raise RedisConnectionError(_CLOSED)
        buf += data

    def _check(self) -> None:
        self._watchdog = None
        deadline = self._deadline
        if deadline is None:
            return  # no wait with a deadline now: the next one arms a timer again
        if self._loop.time() >= deadline - 0.001:  # timers may fire a clock tick early
            self._timed_out = True
            self._abort()  # the wait ends with the connection; fill() says why
        else:
            self._watchdog = self._loop.call_at(deadline, self._check)

    def _raise_timed_out(self) -> None:
        if self._timed_out:
            raise RedisTimeoutError("Timeout reading from Redis")

    def _build(self, buf: bytearray, pos: int) -> tuple[Any, int]:
        end = buf.find(b"\r\n", pos)
        kind = buf[pos]
        if kind == _BULK:
            size = int(buf[pos + 1 : end])
            if size < 0:
                return None, end + 2
            start = end + 2
            return bytes(buf[start : start + size]), start + size + 2
        if kind in (_ARRAY, _SET, _PUSH):
            count = int(buf[pos + 1 : end])
            if count < 0:
                return None, end + 2
            at = end + 2
            items = []
            for _ in range(count):
                item, at = self._build(buf, at)
                items.append(item)
            return items, at
        if kind in (_INT, _BIG):
            return int(buf[pos + 1 : end]), end + 2
        if kind == _SIMPLE:
            return bytes(buf[pos + 1 : end]), end + 2
        if kind == _ERROR:
            return self._parse_error(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
        if kind == _NULL:
            return None, end + 2
        if kind == _DOUBLE:
            return float(buf[pos + 1 : end]), end + 2
        if kind == _BOOL:
            return buf[pos + 1 : end] == b"t", end + 2
        if kind in (_VERBATIM, _BULK_ERROR):
            start = end + 2
            stop = start + int(buf[pos + 1 : end])
            text = bytes(buf[start:stop])
            if kind == _VERBATIM:
                return text[4:], stop + 2  # drops the "txt:" format prefix
            return self._parse_error(text.decode("utf-8", "replace")), stop + 2
        if kind in (_MAP, _ATTRIBUTE):
            at = end + 2
            pairs = {}
            for _ in range(int(buf[pos + 1 : end])):
                key, at = self._build(buf, at)
                value, at = self._build(buf, at)
                pairs[key if not isinstance(key, list) else tuple(key)] = value
            if kind == _ATTRIBUTE:
                return self._build(buf, at)
            return pairs, at
        raise InvalidResponse(f"Protocol Error: {bytes(buf[pos:end])!r}")
