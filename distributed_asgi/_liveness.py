"""Liveness between processes: whether the edge or Node at the other end of a connection is
still there, at a cost that does not grow with the connections between the two.

Rules of this file:

- A peer is a process this one has connections with, named by its liveness channel (the
  ``peer`` of its ``connect`` or ``accept``). Each process reads its own liveness channel in one
  task, and sends each peer one ``alive`` frame per heartbeat interval, whatever the number of
  connections between them. It sends it even when other frames went to that peer during the
  interval: those went to connection channels, which the peer stops reading while a connection
  is flow-controlled, so only the liveness channel is sure to be read.
- Hearing from a peer is any frame from it: an ``alive`` on the liveness channel, or any frame
  on one of the connections' channels (the callers report those with ``heard``).
- A peer silent for its window (its interval times the misses) is gone: every connection with
  it is given up (``on_lost``), by the one timer of this process, never a timer per connection.
  A peer is beaten only while there are connections with it; one left without any is
  forgotten after its window.
- Each ``alive`` frame names the connections the sender holds with that peer (and, at the edge,
  those still being picked up, whose Node is not known yet), and the number of its round. A
  connection is judged only by rounds after the one current when it was made (the number its
  ``connect`` or ``accept`` carried), which list it for as long as the sender holds it. A
  connection such a round does not list is gone on the other side (its frames were lost, by a
  Redis restart say, while both processes stayed alive): ``on_dropped`` is told. Frames of a
  connection and the ``alive`` frames of the same sender share one inbox and one ordered
  batch, so everything the peer sent for a connection before letting go of it comes first.
- A peer that named no liveness channel heartbeats each connection: that connection is its own
  peer (named by the channel this side sends it frames on), and is sent a ``heartbeat`` frame
  with its id each interval, as that peer expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from distributed_asgi._aio import DeadlineExceeded, wait_event, within
from distributed_asgi.core.frames import Alive, FrameError, Heartbeat, decode_frame, encode
from distributed_asgi.core.types import Message
from distributed_asgi.layers import GatewayLayer, LayerError

__all__ = ["Liveness"]

logger = logging.getLogger("distributed_asgi.liveness")

_C = TypeVar("_C")


class _Peer(Generic[_C]):
    __slots__ = ("beat", "channel", "connections", "heard", "window")

    def __init__(self, channel: str, window: float, beat: Message | None) -> None:
        self.channel = channel  # where frames to this peer go
        self.window = window  # silence after which it is gone
        self.heard = time.monotonic()
        # What to send it each interval: None for the ``alive`` of this process.
        self.beat = beat
        # connection -> (its id, the peer's round it is judged after; None: never judged)
        self.connections: dict[_C, tuple[str, int | None]] = {}


class Liveness(Generic[_C]):
    """The peers of one process, when each was last heard, and the one timer over them."""

    def __init__(
        self,
        layer: GatewayLayer,
        prefix: str,
        interval: float,
        on_lost: Callable[[_C, float], None],
        on_dropped: Callable[[_C], None],
    ) -> None:
        self.layer = layer
        self.prefix = prefix
        self.interval = interval
        self.on_lost = on_lost
        self.on_dropped = on_dropped
        self._round = 0  # alive rounds begun
        self._held: set[str] = set()  # connections held with no peer yet (being picked up)
        self._channel: str | None = None
        self._peers: dict[str, _Peer[_C]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._beating: asyncio.Task[None] | None = None
        self._wake_at = math.inf  # when the timer wakes next (monotonic)

    @property
    def name(self) -> str | None:
        """This process's liveness channel, once ``channel()`` made it."""
        return self._channel

    async def channel(self) -> str:
        """This process's liveness channel (made, and read from then on, at the first call)."""
        if self._channel is not None:
            return self._channel
        return self._adopt(await self.layer.new_channel(self.prefix))

    def _adopt(self, made: str) -> str:
        """The first channel made is the process's: connections that came together each made
        one. Looked at after the wait in a call of its own: compiled code would trust mypy's
        narrowing of ``_channel`` to None from before the wait (compile_native.py)."""
        if self._channel is None:
            self._channel = made
            self._tasks = [
                asyncio.ensure_future(self._read()),
                asyncio.ensure_future(self._watch()),
            ]
        return self._channel

    @property
    def round(self) -> int:
        """The alive round under way: a connection made now is judged by later rounds."""
        return self._round

    def hold(self, conn_id: str) -> None:
        """List ``conn_id`` to every peer until ``let_go`` (a connection not yet attached)."""
        self._held.add(conn_id)

    def let_go(self, conn_id: str) -> None:
        self._held.discard(conn_id)

    def attach(
        self,
        connection: _C,
        key: str,
        window: float,
        conn_id: str,
        *,
        after: int | None,
        beats_per_connection: bool = False,
    ) -> None:
        """Watch ``connection`` (id ``conn_id``) and its peer ``key``, judged by the peer's
        rounds after ``after`` (None: the peer lists nothing). ``beats_per_connection`` for a
        peer without a liveness channel (``key`` is then that connection's channel)."""
        peer = self._peers.get(key)
        if peer is None:
            beat = encode(Heartbeat(conn_id)) if beats_per_connection else None
            peer = self._peers[key] = _Peer(key, window, beat)
            self._wake.set()  # its window may end before the timer's next round
        elif not peer.connections:
            now = peer.heard = time.monotonic()  # a new connection is news from it
            if self._wake_at > now + self.interval:
                self._wake.set()  # beaten again from now on: within the interval
        peer.connections[connection] = (conn_id, after)

    def detach(self, connection: _C, key: str) -> None:
        # A peer left without connections stays known for its window (the timer forgets it
        # then): a process whose connections come and go one at a time costs no churn here.
        peer = self._peers.get(key)
        if peer is not None:
            peer.connections.pop(connection, None)

    def heard(self, key: str) -> None:
        peer = self._peers.get(key)
        if peer is not None:
            peer.heard = time.monotonic()

    async def aclose(self) -> None:
        tasks = [*self._tasks, *([self._beating] if self._beating is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._beating = [], None

    # -- the timer ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            self._give_up_silent(now)
            active = [peer for peer in self._peers.values() if peer.connections]
            if active and now >= next_beat:
                next_beat = now + self.interval
                self._round += 1
                # Its own task, bounded by the interval: a slow Redis must not delay the check.
                if self._beating is None or self._beating.done():
                    self._beating = asyncio.ensure_future(self._beat(active))
            self._wake.clear()
            if not self._peers:
                self._wake_at = math.inf
                await self._wake.wait()  # nothing to watch: no wake-ups at all
                continue
            expiries = [peer.heard + peer.window for peer in self._peers.values()]
            self._wake_at = min(next_beat, *expiries) if active else min(expiries)
            await wait_event(self._wake, max(0.0, self._wake_at - time.monotonic()))

    def _give_up_silent(self, now: float) -> None:
        for key, peer in list(self._peers.items()):
            if now - peer.heard <= peer.window:
                continue
            del self._peers[key]  # silent, or without connections for a window: forgotten
            for connection in list(peer.connections):
                self.on_lost(connection, peer.window)

    async def _beat(self, peers: list[_Peer[_C]]) -> None:
        await asyncio.gather(*(self._send(peer) for peer in peers))

    def _alive(self, peer: _Peer[_C]) -> Message:
        assert self._channel is not None
        held = [conn_id for conn_id, _ in peer.connections.values()]
        held.extend(self._held)
        return encode(Alive(self._channel, self._round, tuple(held)))

    async def _send(self, peer: _Peer[_C]) -> None:
        # Built now, not when the round began: it lists what is held as it leaves.
        frame = peer.beat if peer.beat is not None else self._alive(peer)
        # A beat lost (Redis away or slow) is a miss the peer's window allows for.
        with contextlib.suppress(DeadlineExceeded, LayerError):
            await within(self.interval, self.layer.push(peer.channel, frame))

    # -- the reader --------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._channel is not None
        while True:
            try:
                raw: Message | None = await self.layer.receive(self._channel)
            except LayerError:  # the layer reconnects by itself; the windows still count
                raw = None
            if raw is None:  # waited out after the handler, never in it (compile_native.py)
                await asyncio.sleep(0.1)
                continue
            try:
                frame = decode_frame(raw)
            except FrameError as exc:
                logger.warning("dropped a bad frame on %s: %s", self._channel, exc)
                continue
            if isinstance(frame, Alive):
                self.heard(frame.sender)
                self._judge(frame)
            else:
                logger.warning(
                    "dropped a %s frame on %s: expected alive",
                    type(frame).__name__,
                    self._channel,
                )

    def _judge(self, alive: Alive) -> None:
        """Tell ``on_dropped`` of the connections a round made after them does not list."""
        peer = self._peers.get(alive.sender)
        if peer is None or alive.held is None:
            return
        held = set(alive.held)
        for connection, (conn_id, after) in list(peer.connections.items()):
            if after is not None and alive.round > after and conn_id not in held:
                self.on_dropped(connection)
