"""``RedisLocalChannelLayer``: normal channels on a machine-local server, the rest central.

asgi_redis's "local and remote" mode, with a Redis (ideally on a unix socket) as the local layer
instead of asgi_ipc. Normal channels (``http.request``, a Node's route channel) never leave the
machine; process-specific channels (``name!suffix``) and groups go through the central ``hosts``
so that replies and group messages reach processes on other machines.

The price, as in asgi_redis: every consumer of a normal channel must run on the machine whose
local server the senders use. A message sent to a normal channel nobody on this machine reads
waits there until it expires.

Group membership follows the member: a process-specific member is stored centrally and reached
from any machine; a normal-channel member is stored on the local server (that is where its
queue is) and reached by ``group_send`` calls made on this machine.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence

from .base import Message, require_valid_channel_name, require_valid_group_name
from .hosts import single_host
from .options import LayerOptions
from .redis import RedisChannelLayer

__all__ = ["RedisLocalChannelLayer", "central_layer"]


class RedisLocalChannelLayer:
    """``RedisChannelLayer`` options plus ``local_hosts``; see docs/layer.md.

    >>> layer = RedisLocalChannelLayer(
    ...     hosts=["redis://central.example:6379/0"],
    ...     local_hosts=["unix:///run/redis/redis.sock"],
    ... )
    """

    extensions = ["groups", "flush"]

    def __init__(
        self,
        hosts: object = None,
        local_hosts: object = None,
        prefix: str = LayerOptions.prefix,
        expiry: float = LayerOptions.expiry,
        group_expiry: float = LayerOptions.group_expiry,
        capacity: int = LayerOptions.capacity,
        channel_capacity: Mapping[str | re.Pattern[str], int] | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        *,
        max_message_size: int | None = LayerOptions.max_message_size,
        host: str | None = None,
        port: int | str | None = None,
        db: int | None = None,
        password: str | None = None,
    ) -> None:
        if local_hosts is None:
            raise ValueError(
                "local_hosts is required: the machine-local server(s) for normal channels, "
                "e.g. ['unix:///run/redis/redis.sock']"
            )
        options = LayerOptions(
            prefix=prefix,
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            symmetric_encryption_keys=symmetric_encryption_keys,
            max_message_size=max_message_size,
        )
        self.options = options
        self.central = RedisChannelLayer.from_options(
            single_host(hosts, host, port, db, password), options
        )
        try:
            self.local = RedisChannelLayer.from_options(local_hosts, options)
        except ValueError as exc:
            # parse_hosts names entries "hosts[i]"; say which option they belong to.
            raise ValueError(f"local_hosts: {exc}") from None
        self.prefix = options.prefix
        self.expiry = options.expiry
        self.group_expiry = options.group_expiry
        self.capacity = options.capacities

    def _for(self, channel: str) -> RedisChannelLayer:
        return self.central if "!" in require_valid_channel_name(channel) else self.local

    async def send(self, channel: str, message: Message) -> None:
        """Send to ``channel``: the local server for a normal channel, else the central one."""
        await self._for(channel).send(channel, message)

    async def push(self, channel: str, message: Message) -> None:
        """Push to a process-specific channel (central, as its inbox); see
        ``RedisChannelLayer.push``."""
        await self.central.push(channel, message)

    async def receive(self, channel: str) -> Message:
        return await self._for(channel).receive(channel)

    async def claim(self, channel: str, holder: str, ttl: float) -> str | None:
        """Claim a process-specific channel (central, as its inbox); see
        ``RedisChannelLayer.claim``."""
        return await self.central.claim(channel, holder, ttl)

    async def holder(self, channel: str) -> str | None:
        return await self.central.holder(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        return await self.central.new_channel(prefix)

    async def group_add(self, group: str, channel: str) -> None:
        await self._for(channel).group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._for(channel).group_discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Every process-specific member anywhere, and the normal-channel members added here."""
        require_valid_group_name(group)
        await asyncio.gather(
            self.central.group_send(group, message), self.local.group_send(group, message)
        )

    async def flush(self) -> None:
        """Delete this layer's keys on the central servers and on this machine's."""
        await asyncio.gather(self.central.flush(), self.local.flush())

    async def close(self) -> None:
        await asyncio.gather(self.central.close(), self.local.close())

    def __repr__(self) -> str:
        return f"<RedisLocalChannelLayer central={self.central!r} local={self.local!r}>"


def central_layer(layer: object) -> RedisChannelLayer | None:
    """The Redis layer every machine shares, where what ``distributed-asgi status`` shows is
    kept: ``layer`` itself, or a local+central layer's central one; None for the others (the
    in-memory layer)."""
    if isinstance(layer, RedisChannelLayer):
        return layer
    if isinstance(layer, RedisLocalChannelLayer):
        return layer.central
    return None
