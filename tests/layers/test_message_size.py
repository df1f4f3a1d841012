"""max_message_size: refused at send, dropped (and logged with the channel) at receive."""

from __future__ import annotations

import asyncio
import logging

import pytest

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.serialization import BadMessage, MessageSerializer


def test_serializer_refuses_and_drops_oversized_messages() -> None:
    small = MessageSerializer(max_message_size=100)
    with pytest.raises(ValueError, match="over max_message_size \\(100\\)"):
        small.serialize({"body": b"x" * 200})
    big = MessageSerializer(max_message_size=None).serialize({"body": b"x" * 200})
    with pytest.raises(BadMessage, match="over max_message_size"):
        small.deserialize(big)
    assert small.deserialize(small.serialize({"body": b"x"})) == {"body": b"x"}


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True])
def test_bad_max_message_size_fails_at_construction(value: object) -> None:
    with pytest.raises(ValueError, match="max_message_size"):
        RedisChannelLayer(hosts=["redis://localhost:6379/0"], max_message_size=value)  # type: ignore[arg-type]


async def test_oversized_entry_is_dropped_with_its_channel_named(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = RedisChannelLayer(hosts=[redis_url], prefix=prefix, max_message_size=10_000)
    # Another client with no limit (or a forger) puts a 1 MB message in the queue.
    sender = RedisChannelLayer(hosts=[redis_url], prefix=prefix, max_message_size=None)
    try:
        with pytest.raises(ValueError, match="over max_message_size"):
            await receiver.send("size.test", {"body": b"x" * 20_000})
        await sender.send("size.test", {"body": b"x" * 1_000_000})
        await sender.send("size.test", {"body": b"small"})
        with caplog.at_level(logging.WARNING, logger="distributed_asgi.layers"):
            message = await asyncio.wait_for(receiver.receive("size.test"), 5)
        assert message == {"body": b"small"}
        assert "dropped a message on size.test: message of 1000" in caplog.text
    finally:
        await receiver.flush()
        await receiver.close()
        await sender.close()
