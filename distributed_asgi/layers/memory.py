"""``InMemoryChannelLayer``: the same API inside one process, for tests and single-process use.

Same semantics as the Redis layer (capacity, expiry, groups, copies of messages), so the same
conformance tests run against both.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Mapping

from .base import (
    ChannelFull,
    Message,
    require_own_channel,
    require_process_channel,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
)
from .options import LayerOptions

__all__ = ["InMemoryChannelLayer"]

logger = logging.getLogger("distributed_asgi.layers")


class _Channel:
    def __init__(self) -> None:
        # (expires at, message, counted): pushed messages (counted False) hold no capacity.
        self.messages: deque[tuple[float, Message, bool]] = deque()
        self.counted = 0  # messages queued that hold capacity
        self.waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> Message:
        _, message, counted = self.messages.popleft()
        self.counted -= counted
        return message

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            loop = waiter.get_loop()
            if loop is asyncio.get_running_loop():
                waiter.set_result(None)
                return
            # A receiver in another thread's loop (sync code through async_to_sync).
            try:
                loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:
                continue  # that loop is closed: wake the next waiter instead
            return


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class InMemoryChannelLayer:
    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: float = LayerOptions.expiry,
        group_expiry: float = LayerOptions.group_expiry,
        capacity: int = LayerOptions.capacity,
        channel_capacity: Mapping[str | re.Pattern[str], int] | None = None,
    ) -> None:
        self.options = LayerOptions(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self.expiry = self.options.expiry
        self.group_expiry = self.options.group_expiry
        self.capacity = self.options.capacities
        self.client_prefix = secrets.token_hex(6)
        self._channels: dict[str, _Channel] = {}
        self._groups: dict[str, dict[str, float]] = {}  # group -> channel -> added at
        self._claims: dict[str, tuple[float, str]] = {}  # channel -> (expires at, holder)

    def _expire(self, state: _Channel) -> None:
        now = time.monotonic()
        while state.messages and state.messages[0][0] <= now:
            state.take()

    async def send(self, channel: str, message: Message) -> None:
        require_valid_channel_name(channel)
        self._send(channel, copy.deepcopy(require_valid_message(message)))

    async def push(self, channel: str, message: Message) -> None:
        """Send to a process-specific channel without the capacity check (see
        ``RedisChannelLayer.push``); ``ValueError`` for a normal channel."""
        require_process_channel(require_valid_channel_name(channel), "push")
        self._send(channel, copy.deepcopy(require_valid_message(message)), counted=False)

    def _send(self, channel: str, message: Message, *, counted: bool = True) -> bool:
        state = self._channels.setdefault(channel, _Channel())
        self._expire(state)
        if counted and state.counted >= self.capacity.for_channel(channel):
            raise ChannelFull(channel)
        state.messages.append((time.monotonic() + self.expiry, message, counted))
        state.counted += counted
        state.wake_one()
        return True

    async def claim(self, channel: str, holder: str, ttl: float) -> str | None:
        """Claim a process-specific channel for ``holder`` (see ``RedisChannelLayer.claim``):
        None when this call got it, else the holder's value."""
        held = await self.holder(channel)
        if held is not None:
            return held
        self._claims.pop(channel, None)  # an expired one: the new one goes to the end
        self._claims[channel] = (time.monotonic() + ttl, holder)
        return None

    async def holder(self, channel: str) -> str | None:
        """The value of the claim on ``channel``; None while nobody holds it."""
        require_process_channel(require_valid_channel_name(channel), "claim")
        now = time.monotonic()
        claims = self._claims
        while claims:  # oldest first: forget the expired ones at the front
            name, (expires, _) = next(iter(claims.items()))
            if expires > now:
                break
            del claims[name]
        held = claims.get(channel)
        return held[1] if held is not None and held[0] > now else None

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``. As with the Redis layer, a process-specific channel
        must be one this instance's ``new_channel()`` made (``WrongClientPrefix`` otherwise),
        so code that passes tests here does not fail in production."""
        require_own_channel(require_valid_channel_name(channel), self.client_prefix)
        state = self._channels.setdefault(channel, _Channel())
        while True:
            self._expire(state)
            if state.messages:
                message = state.take()
                if state.messages:
                    state.wake_one()
                elif not state.waiters:
                    self._channels.pop(channel, None)
                return copy.deepcopy(message)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            state.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    state.wake_one()  # pass the wake-up on; the message stays queued
                raise
            finally:
                if waiter in state.waiters:
                    state.waiters.remove(waiter)

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.inmemory.{self.client_prefix}!{secrets.token_hex(6)}"

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        self._groups.setdefault(group, {})[channel] = time.monotonic()

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]

    async def group_send(self, group: str, message: Message) -> None:
        require_valid_group_name(group)
        message = copy.deepcopy(require_valid_message(message))
        members = self._groups.get(group, {})
        cutoff = time.monotonic() - self.group_expiry
        for channel in [c for c, added in members.items() if added < cutoff]:
            del members[channel]
        full = 0
        for channel in list(members):
            try:
                self._send(channel, message)
            except ChannelFull:
                full += 1
        if full:
            logger.warning("group_send to %r skipped %d member(s) at capacity", group, full)

    async def flush(self) -> None:
        self._channels.clear()
        self._groups.clear()
        self._claims.clear()

    async def close(self) -> None:
        pass
