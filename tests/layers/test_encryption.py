"""symmetric_encryption_keys: rotation, and nothing readable or forgeable without a key."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.serialization import BadMessage, MessageSerializer

OLD = "old-key-" + "x" * 32
NEW = "new-key-" + "y" * 32


def test_rotation_encrypt_with_first_decrypt_with_any() -> None:
    old = MessageSerializer([OLD])
    rotating = MessageSerializer([NEW, OLD])
    new_only = MessageSerializer([NEW])
    from_old = old.serialize({"v": 1})
    assert rotating.deserialize(from_old) == {"v": 1}
    from_rotating = rotating.serialize({"v": 2})
    assert new_only.deserialize(from_rotating) == {"v": 2}
    with pytest.raises(BadMessage, match="decrypt"):
        old.deserialize(from_rotating)


def test_plain_message_is_refused_when_keys_are_set() -> None:
    forged = MessageSerializer().serialize({"type": "forged"})
    with pytest.raises(BadMessage, match="unencrypted"):
        MessageSerializer([NEW]).deserialize(forged)


def test_tampered_ciphertext_is_refused() -> None:
    serializer = MessageSerializer([NEW])
    data = bytearray(serializer.serialize({"amount": 10}))
    data[-5] ^= 1
    with pytest.raises(BadMessage):
        serializer.deserialize(bytes(data))


@pytest.mark.parametrize("keys", ["a-single-string", [""], [42]])
def test_bad_keys_fail_at_construction(keys: object) -> None:
    with pytest.raises(ValueError, match="symmetric_encryption_keys"):
        MessageSerializer(keys)  # type: ignore[arg-type]


async def test_encrypted_at_rest_and_wrong_key_dropped(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = RedisChannelLayer(hosts=[redis_url], prefix=prefix, symmetric_encryption_keys=[NEW])
    stranger = RedisChannelLayer(
        hosts=[redis_url], prefix=prefix, symmetric_encryption_keys=["another" * 8]
    )
    receiver = RedisChannelLayer(
        hosts=[redis_url], prefix=prefix, symmetric_encryption_keys=[NEW, OLD]
    )
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await sender.send("test.secret", {"card": "4111-1111"})
        stored = await admin.lrange(f"{prefix}:q:test.secret", 0, -1)
        assert stored and b"4111" not in stored[0]
        assert await receiver.receive("test.secret") == {"card": "4111-1111"}

        channel = await receiver.new_channel()
        await stranger.send(channel, {"from": "stranger"})
        await sender.send(channel, {"from": "friend"})
        with caplog.at_level(logging.WARNING, logger="distributed_asgi.layers"):
            assert await asyncio.wait_for(receiver.receive(channel), 5) == {"from": "friend"}
        assert "does not decrypt" in caplog.text
    finally:
        await admin.aclose()
        await sender.flush()
        for layer in (sender, stranger, receiver):
            await layer.close()
