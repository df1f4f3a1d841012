"""resp.py: replies parsed from one buffer, whole or in pieces, and nothing lost on a cancel."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distributed_asgi.layers import LayerUnavailable, RedisChannelLayer
from distributed_asgi.layers.connection import DedicatedConnection
from distributed_asgi.layers.resp import ReplyReader
from distributed_asgi.ops.redis_process import RedisProcess


def _parse_error(text: str) -> Exception:
    return BusyLoadingError(text) if text.startswith("LOADING") else ResponseError(text)


async def _read_all(data: bytes, count: int, pieces: int = 1) -> list[object]:
    stream = asyncio.StreamReader()
    reader = ReplyReader(stream, _parse_error)
    size = max(1, len(data) // pieces)
    for start in range(0, len(data), size):
        stream.feed_data(data[start : start + size])
    return [await reader.read(1.0) for _ in range(count)]


REPLIES = (
    b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*0\r\n"
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$0\r\n\r\n$-1\r\n-ERR bad thing\r\n"
    b"_\r\n,1.5\r\n#t\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n%1\r\n+k\r\n:2\r\n~1\r\n:3\r\n"
)
EXPECTED = [
    b"OK",
    42,
    b"hello",
    None,
    None,
    [],
    [b"a", [1, b""], None],
    "error",
    None,
    1.5,
    True,
    12345678901234567890,
    b"abc",
    {b"k": 2},
    [3],
]


@pytest.mark.parametrize("pieces", [1, 7, len(REPLIES)])
async def test_every_reply_type_whole_or_in_pieces(pieces: int) -> None:
    replies = await _read_all(REPLIES, len(EXPECTED), pieces)
    error = replies[7]
    assert isinstance(error, ResponseError) and str(error) == "ERR bad thing"
    assert [r for i, r in enumerate(replies) if i != 7] == [
        e for i, e in enumerate(EXPECTED) if i != 7
    ]


@pytest.mark.parametrize("pieces", [1, 7, len(REPLIES)])
async def test_a_batch_taken_at_once_is_the_replies_read_one_by_one(pieces: int) -> None:
    """``take_into`` takes every reply that has arrived, up to the count, and leaves the rest
    (here a reply after the batch) to the next call."""
    data = REPLIES + b":99\r\n"
    one_by_one = await _read_all(data, len(EXPECTED) + 1)
    stream = asyncio.StreamReader()
    reader = ReplyReader(stream, _parse_error)
    size = max(1, len(data) // pieces)
    taken: list[object] = []
    for start in range(0, len(data), size):
        stream.feed_data(data[start : start + size])
        await reader.fill()
        reader.take_into(taken, len(EXPECTED))
        assert len(taken) <= len(EXPECTED)
    assert len(taken) == len(EXPECTED)
    assert [str(r) if isinstance(r, Exception) else r for r in taken] == [
        str(r) if isinstance(r, Exception) else r for r in one_by_one[:-1]
    ]
    assert await reader.read(None) == 99


async def test_a_connection_error_reply_in_a_batch_keeps_the_replies_before_it() -> None:
    stream = asyncio.StreamReader()
    reader = ReplyReader(stream, _parse_error)
    stream.feed_data(b":1\r\n+OK\r\n-LOADING Redis is loading\r\n:2\r\n")
    await reader.fill()
    taken: list[object] = []
    with pytest.raises(BusyLoadingError):
        reader.take_into(taken, 4)
    assert taken == [1, b"OK"]
    reader.take_into(taken, 4)
    assert taken == [1, b"OK", 2]


async def test_a_large_reply_in_many_chunks_is_read_whole() -> None:
    entries = [bytes([65 + i]) * 300_000 for i in range(5)]
    data = b"*5\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(e), e) for e in entries) + b":7\r\n"
    assert await _read_all(data, 2, pieces=400) == [entries, 7]


@pytest.mark.parametrize("pieces", [1, 300])
async def test_a_large_reply_of_mixed_items_is_read_whole(pieces: int) -> None:
    """Over the one-pass size, a reply that is not all bulk strings (a SCAN page: a cursor and
    an array of keys) is still built whole, once complete."""
    keys = [b"key:%06d" % i for i in range(3000)]
    data = b"*2\r\n$3\r\n123\r\n*%d\r\n" % len(keys)
    data += b"".join(b"$%d\r\n%s\r\n" % (len(k), k) for k in keys) + b":5\r\n"
    assert await _read_all(data, 2, pieces=pieces) == [[b"123", keys], 5]


async def test_a_cancelled_read_keeps_what_had_arrived() -> None:
    stream = asyncio.StreamReader()
    reader = ReplyReader(stream, _parse_error)
    stream.feed_data(b"*2\r\n$3\r\nabc\r\n$3\r\nd")  # the reply is cut in the middle
    waiting = asyncio.ensure_future(reader.read(None))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    stream.feed_data(b"ef\r\n:1\r\n")
    assert await reader.read(None) == [b"abc", b"def"]
    assert await reader.read(None) == 1


async def test_connection_errors_timeouts_and_a_closed_stream_raise() -> None:
    with pytest.raises(BusyLoadingError):
        await _read_all(b"-LOADING Redis is loading the dataset in memory\r\n", 1)
    stream = asyncio.StreamReader()
    reader = ReplyReader(stream, _parse_error, abort=stream.feed_eof)
    with pytest.raises(RedisTimeoutError):
        await asyncio.wait_for(reader.read(0.05), 5)
    stream = asyncio.StreamReader()
    reader = ReplyReader(stream, _parse_error)
    stream.feed_data(b"$5\r\nhel")
    stream.feed_eof()
    with pytest.raises(RedisConnectionError):
        await reader.read(1.0)


async def test_a_dedicated_connection_reads_real_replies(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with DedicatedConnection(client) as connection:
            key = f"{prefix}:resp"
            replies = await connection.execute(
                [
                    ("RPUSH", key, b"x" * 200_000, "y"),
                    ("LPOP", key, 5),
                    ("HINCRBY", key, "f", 1),
                    ("TIME",),
                    ("GET", f"{prefix}:missing"),
                ]
            )
            assert replies[:3] == [2, [b"x" * 200_000, b"y"], 1]
            assert len(replies[3]) == 2 and replies[4] is None
            await client.set(key, "s")
            (wrong,) = await connection.execute([("LPUSH", key, "v")])
            assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
    finally:
        await client.aclose()


async def test_a_server_that_stops_answering_times_out_then_recovers(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    """A frozen server (SIGSTOP): a send fails with LayerUnavailable after the socket timeout,
    not never; once it answers again, the next send works."""
    server = redis_factory()
    layer = RedisChannelLayer(hosts=[{"address": server.url, "socket_timeout": 1}])
    assert server.process is not None
    try:
        await layer.send("test.frozen", {"n": 1})
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(LayerUnavailable, match="Timeout"):
                await asyncio.wait_for(layer.send("test.frozen", {"n": 2}), 10)
            assert 0.9 < time.monotonic() - started < 5
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        await asyncio.wait_for(layer.send("test.frozen", {"n": 3}), 10)
    finally:
        await layer.close()
