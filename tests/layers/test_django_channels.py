"""RedisChannelLayer as a Django Channels CHANNEL_LAYERS backend, with real consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")
pytest.importorskip("channels")


@pytest.fixture
def channels_settings(redis_url: str, prefix: str) -> Iterator[dict[str, Any]]:
    from django.conf import settings

    layers = {
        "default": {
            "BACKEND": "distributed_asgi.layers.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    if not settings.configured:
        settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS=layers)
        django.setup()
    else:
        settings.CHANNEL_LAYERS = layers
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield layers["default"]
    channel_layers.backends.clear()


async def test_group_send_from_another_instance_reaches_both_consumers(
    channels_settings: dict[str, Any],
) -> None:
    from channels.exceptions import ChannelFull as ChannelsChannelFull
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from distributed_asgi.layers import ChannelFull, RedisChannelLayer

    assert issubclass(ChannelFull, ChannelsChannelFull)

    class ChatConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.channel_layer.group_add("lobby", self.channel_name)
            await self.accept()

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard("lobby", self.channel_name)

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send_json({"text": event["text"], "raw": event["raw"].hex()})

    layer = get_channel_layer()
    assert isinstance(layer, RedisChannelLayer)
    first = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/")
    second = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/")
    assert (await first.connect())[0]
    assert (await second.connect())[0]

    other = RedisChannelLayer(**channels_settings["CONFIG"])
    try:
        await other.group_send("lobby", {"type": "chat.message", "text": "hi", "raw": b"\x01"})
        for communicator in (first, second):
            reply = await asyncio.wait_for(communicator.receive_json_from(), 5)
            assert reply == {"text": "hi", "raw": "01"}
    finally:
        await first.disconnect()
        await second.disconnect()
        await other.flush()
        await other.close()
        await layer.close()
