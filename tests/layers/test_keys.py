"""keys.py: the key names and the entry header are the ones the scripts and readers use."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.keys import (
    NODE,
    QUEUE,
    KeySpace,
    entry,
    entry_channel,
    entry_counted,
    entry_payload,
    entry_sent,
    hash_tag,
)


def test_key_names_with_and_without_a_hash_tag() -> None:
    keys = KeySpace("p")
    assert keys.queue("a.b") == "p:q:a.b"
    assert keys.counters("specific.x!", hash_tag(7)) == "p:n:{7}specific.x!"
    assert keys.group("room", "{3}") == ["p:g:{3}room", "p:gc:{3}room"]
    assert keys.group_index("room", "{9}") == "p:gi:{9}room"
    assert keys.node("n1") == "p:node:n1"
    assert keys.pattern(NODE) == "p:node:*"
    assert keys.all() == "p:*"
    assert keys.name_of(QUEUE, "p:q:{12}route") == "route"
    assert keys.name_of(QUEUE, "p:q:route") == "route"
    assert keys.name_of(QUEUE, "p:n:route") is None


def test_entry_header_round_trip_and_malformed_entries() -> None:
    packed = entry(1_700_000_000_123, "chan!x", b"M\x80")
    assert packed.startswith(b"1700000000123chan!x\n")
    assert entry_sent(packed) == 1_700_000_000_123
    assert entry_channel(packed) == "chan!x"
    assert entry_payload(packed) == b"M\x80"
    assert entry_sent(b"12345") is None
    assert entry_sent(b"170000000012xchan\npayload") is None
    assert entry_sent(b"1700000000123chan-without-newline") is None
    assert entry_counted(packed)


def test_a_channel_name_with_non_ascii_letters_survives_the_header() -> None:
    # Channel names allow any word character after the "!" (Django Channels' rule), and
    # the header carries the name as UTF-8.
    assert entry_channel(entry(1, "specific.ab!é1", b"x")) == "specific.ab!é1"


def test_an_uncounted_entry_is_marked_after_the_time() -> None:
    pushed = entry(1_700_000_000_123, "chan!x", b"M\x80", counted=False)
    assert pushed == b"1700000000123~chan!x\nM\x80"
    assert not entry_counted(pushed)
    assert entry_sent(pushed) == 1_700_000_000_123
    assert entry_channel(pushed) == "chan!x"
    assert entry_payload(pushed) == b"M\x80"


async def test_the_scripts_write_what_keys_py_reads(redis_url: str, prefix: str) -> None:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        before = int(time.time() * 1000)
        await layer.send("keys.check", {"n": 1})
        (raw,) = await admin.lrange(KeySpace(prefix).queue("keys.check"), 0, -1)
        assert isinstance(raw, bytes)
        sent = entry_sent(raw)
        assert sent is not None and before - 1000 <= sent <= int(time.time() * 1000) + 1000
        assert entry_channel(raw) == "keys.check"
        assert layer.serializer.deserialize(entry_payload(raw)) == {"n": 1}
        # An entry written with entry() is received like one the send script wrote.
        now_ms = int(time.time() * 1000)
        payload = layer.serializer.serialize({"n": 2})
        await admin.rpush(
            KeySpace(prefix).queue("keys.check"), entry(now_ms, "keys.check", payload)
        )
        assert await asyncio.wait_for(layer.receive("keys.check"), 5) == {"n": 1}
        assert await asyncio.wait_for(layer.receive("keys.check"), 5) == {"n": 2}
    finally:
        await layer.flush()
        await layer.close()
        await admin.aclose()
