"""The Node's intake: receives on the route channels, never more than the Node has room for.

Rules of this file:

- The room (free application slots) is kept out as receives, so a key's receives pop together
  (one Redis round pops as many as wait) and an idle Node takes a whole burst in one round.
  Work beyond the room stays in Redis for other Nodes.
- One receive per key while there is any room, so no key starves another; the rest of the
  room goes to the keys taking connects (every key when none is: a burst may come on any),
  fewest receives first.
- When a key takes a connect with the room used up, keys idle for ``IDLE_AFTER`` give back
  their receives beyond one, so a busy key is not held to its share by quiet ones.
- Each receive is a task that, once it has its message, leaves the receives, hands the message
  on and refills the room in the same step, then runs the connection that message started: a
  connection costs one task from its receive to its end, and no callback. A cancelled
  receive puts what it popped back; one that has its message is no longer a receive, so it is
  never cancelled as one.
- A key with a limit (``limits``) never has more receives than its limit less its running
  connections: beyond that its work stays in Redis, as beyond the room.

With ``priority`` (``PriorityIntake``) the order of the keys is the order of preference:

- A key *has work* from the moment one of its receives takes a connect until one has waited
  ``PROBE_AFTER`` without one (its queue is empty); every key has work until seen empty.
- Receives go only to the keys up to the first one that has work and room under its limit
  (the *top*): the keys before it are empty or full and keep one receive each (to see new
  work), the top gets the rest of the room, and the keys after it none (their receives are
  cancelled: what they popped goes back).
- The share: a key passed over for ``share - 1`` connections taken on keys before it (while
  it had no receive) gets the next free room alone (its *turn*); its turn ends when it takes a
  connect, or when its receive has waited ``PROBE_AFTER`` (it had none waiting).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from distributed_asgi.core.types import Message
from distributed_asgi.layers import GatewayLayer

__all__ = ["IDLE_AFTER", "PROBE_AFTER", "Intake", "PriorityIntake", "Traffic", "new_intake"]

logger = logging.getLogger("distributed_asgi.node")

# A key that took no connect for this long is idle (see the rules above).
IDLE_AFTER = 1.0
# With priority: a receive that waited this long without a connect means its key's queue is
# empty (a receive on a key with work waits one Redis round trip).
PROBE_AFTER = 0.05


class Intake:
    """Receives on ``keys``; each message goes to ``on_message(key, message)``, which returns
    the connection it started (awaited in the receive's task, after the refill) or None.

    ``room()`` is how many more connections the Node may take now (0 when it is stopping);
    ``limits`` bounds some keys' connections (checked by ``new_intake``). The Node reports each
    connection's start and end on a key (``started``, ``ended``).
    """

    def __init__(
        self,
        layer: GatewayLayer,
        keys: list[str],
        room: Callable[[], int],
        on_message: Callable[[str, Message], Awaitable[None] | None],
        limits: Mapping[str, int] | None = None,
    ) -> None:
        self.layer = layer
        self.keys = keys
        self.room = room
        self.on_message = on_message
        self.limits = dict(limits or {})
        self.running = dict.fromkeys(keys, 0)  # key -> its connections running now
        self._receives: dict[asyncio.Task[None], str] = {}
        self._receiving = dict.fromkeys(keys, 0)  # key -> receives waiting on it
        # The loop the receives run in (set when the Node starts; else the running one).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._last_taken = dict.fromkeys(keys, -IDLE_AFTER)  # key -> monotonic time
        # The one key of a Node without limits: the whole room is its own (the rules above
        # then come to that), kept out without weighing keys against each other.
        self._only_key = keys[0] if len(keys) == 1 and not self.limits else None

    def fill(self, taken_on: str | None = None) -> None:
        """Keep the room out as receives; ``taken_on`` is the key that just took one."""
        free = self.room()
        if free <= 0:
            return
        room = free - len(self._receives)
        key = self._only_key
        if key is not None:
            if self._receiving[key] == 0:
                room = max(room, 1)  # one receive per key while there is any room
            for _ in range(room):
                self._receive(key)
            return
        if taken_on is not None and room <= 0 and self._can_add(taken_on):
            room += self._take_back_idle_receives(taken_on)
        counts = self._receiving
        for key in self.keys:
            if counts[key] == 0 and self._can_add(key):
                self._receive(key)
                room -= 1
        if room <= 0:
            return
        now = time.monotonic()
        busy = [key for key in self.keys if now - self._last_taken[key] < IDLE_AFTER]
        # The busy keys first; what their limits leave goes to every key.
        room = self._spread(room, busy)
        self._spread(room, self.keys)

    def has_room(self, key: str) -> bool:
        """Whether ``key`` may start one more connection (its limit, if any, allows it)."""
        limit = self.limits.get(key)
        return limit is None or self.running[key] < limit

    def started(self, key: str) -> None:
        self.running[key] += 1

    def ended(self, key: str) -> None:
        """A connection on ``key`` ended: its room (and the Node's) is taken out again."""
        self.running[key] -= 1
        self.fill()

    def _can_add(self, key: str) -> bool:
        """Whether ``key`` may have one more receive (its limit less running and receiving)."""
        limit = self.limits.get(key)
        return limit is None or self.running[key] + self._receiving[key] < limit

    def _spread(self, room: int, keys: Iterable[str]) -> int:
        """Up to ``room`` receives over ``keys``, fewest receives first; the room left."""
        if room <= 0:
            return room
        counts = self._receiving
        open_keys = [key for key in keys if self._can_add(key)]
        while room > 0 and open_keys:
            key = min(open_keys, key=counts.__getitem__)
            self._receive(key)
            room -= 1
            if not self._can_add(key):
                open_keys.remove(key)
        return room

    def cancel(self) -> None:
        """Let go of every receive (each puts back what it popped). One that has finished is
        left to its callback, which hands its connect on, and counted until then."""
        for future, key in list(self._receives.items()):
            if not future.done():
                future.cancel()
                del self._receives[future]
                self._receiving[key] -= 1

    def _take_back_idle_receives(self, busy_key: str) -> int:
        """Cancel the receives of idle keys beyond one each; how many came back."""
        now = time.monotonic()
        freed = 0
        for key in self.keys:
            if key == busy_key or self._receiving[key] <= 1:
                continue
            if now - self._last_taken[key] < IDLE_AFTER:
                continue
            futures = _pending(self._receives, key)
            if not futures:
                continue
            for future in futures:
                future.cancel()
                del self._receives[future]
            # All of the key's, then a new one: it runs after the cancelled ones, so it takes
            # first whatever their last round popped (a cancelled receive keeps that locally).
            self._receiving[key] -= len(futures)
            self._receive(key)
            freed += len(futures) - 1
        return freed

    def _receive(self, key: str) -> None:
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        task = loop.create_task(self._take(key, loop))
        self._receives[task] = key
        self._receiving[key] += 1

    async def _take(self, key: str, loop: asyncio.AbstractEventLoop) -> None:
        """One receive on ``key``, then the connection its message started, if any."""
        task = asyncio.current_task(loop)
        try:
            message = await self.layer.receive(key)
        except asyncio.CancelledError:
            self._settled(key, task, taken=False)
            raise
        except Exception as error:
            self._settled(key, task, taken=False)
            logger.warning("receive on %r failed: %s", key, error)
            loop.call_later(0.1, self.fill)
            return
        self._settled(key, task, taken=True)
        self._last_taken[key] = time.monotonic()
        # It may come when the Node is stopping or full (it was let go of just as it got its
        # message): on_message hands it back then.
        connection = self.on_message(key, message)
        if self.room() <= 0:
            self.cancel()
        else:
            self.fill(taken_on=key)
        if connection is not None:
            await connection

    def _settled(self, key: str, task: asyncio.Task[Any] | None, *, taken: bool) -> None:
        """A receive on ``key`` ended (``taken``: with a message): no longer one of the
        receives, unless ``cancel()`` (or a take-back) let go of it already."""
        if task is not None and self._receives.pop(task, None) is not None:
            self._receiving[key] -= 1


class PriorityIntake(Intake):
    """An ``Intake`` that prefers its keys in their order, with a share for every later key
    (the rules in this module's docstring)."""

    def __init__(
        self,
        layer: GatewayLayer,
        keys: list[str],
        room: Callable[[], int],
        on_message: Callable[[str, Message], Awaitable[None] | None],
        limits: Mapping[str, int] | None = None,
        share: int = 10,
    ) -> None:
        super().__init__(layer, keys, room, on_message, limits)
        self.share = share
        self._has_work = dict.fromkeys(keys, True)
        self._passed_over = dict.fromkeys(keys, 0)  # connections taken before it, unreceived
        # When each of a key's receives went out, oldest first: a key's receives are served
        # in the order they were made, so the first is the one that has waited longest.
        self._issued: dict[str, deque[float]] = {key: deque() for key in keys}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def fill(self, taken_on: str | None = None) -> None:
        free = self.room()
        if free <= 0:
            return
        now = time.monotonic()
        self._note_waiting(now)
        turn = next((key for key in self.keys if self._owed_turn(key)), None)
        top = next((k for k in self.keys if self._has_work[k] and self.has_room(k)), None)
        wanted = self.keys[: self.keys.index(top) + 1] if top is not None else self.keys
        room = free - len(self._receives)
        if top is not None:
            room += self._withdraw_beside(top, turn)
        if turn is not None and self._receiving[turn] == 0 and room > 0:
            self._receive(turn)
            room -= 1
        for key in wanted:
            # One each, as without priority, but a turn has the room to itself.
            if self._receiving[key] == 0 and self._can_add(key) and (turn is None or room > 0):
                self._receive(key)
                room -= 1
        self._spread(room, [top] if top is not None else self.keys)
        self._watch(now)

    def cancel(self) -> None:
        super().cancel()
        for issued in self._issued.values():
            issued.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _owed_turn(self, key: str) -> bool:
        return self._passed_over[key] >= self.share - 1 and self._can_add(key)

    def _note_waiting(self, now: float) -> None:
        """Keys whose oldest receive waited ``PROBE_AFTER``: empty, and owed no turn."""
        for key, issued in self._issued.items():
            if issued and now - issued[0] >= PROBE_AFTER:
                self._has_work[key] = False
                self._passed_over[key] = 0

    def _note_taken(self, key: str) -> None:
        self._has_work[key] = True
        self._passed_over[key] = 0
        for later in self.keys[self.keys.index(key) + 1 :]:
            if self._receiving[later] == 0 and self._can_add(later):
                self._passed_over[later] += 1

    def _watch(self, now: float) -> None:
        """Fill again when a receive that decides the order will have waited ``PROBE_AFTER``."""
        times = [
            issued[0]
            for key, issued in self._issued.items()
            if issued and (self._has_work[key] or self._passed_over[key])
        ]
        if not times:
            return
        at = min(times) + PROBE_AFTER + 0.001
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(at - now, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.fill()

    def _withdraw_beside(self, top: str, turn: str | None) -> int:
        """The keys before ``top`` keep one receive, those after it none (but a turn's)."""
        freed = 0
        position = self.keys.index(top)
        for index, key in enumerate(self.keys):
            keep = 1 if index < position else 0
            if index != position and key != turn and self._receiving[key] > keep:
                freed += self._withdraw(key, keep)
        return freed

    def _withdraw(self, key: str, keep: int) -> int:
        """Cancel the receives of ``key``, keeping ``keep``; how many came back."""
        futures = _pending(self._receives, key)
        for future in futures:
            future.cancel()
            del self._receives[future]
        finished = self._receiving[key] - len(futures)
        self._receiving[key] = finished
        issued = self._issued[key]
        while len(issued) > finished:  # the finished ones are the oldest
            issued.pop()
        new = max(0, keep - finished)
        for _ in range(new):
            self._receive(key)  # after the cancelled ones: it takes first what they popped
        return len(futures) - new

    def _receive(self, key: str) -> None:
        super()._receive(key)
        self._issued[key].append(time.monotonic())

    def _settled(self, key: str, task: asyncio.Task[Any] | None, *, taken: bool) -> None:
        if task in self._receives and self._issued[key]:
            self._issued[key].popleft()
        if taken:
            self._note_taken(key)
        super()._settled(key, task, taken=taken)


def _pending(receives: dict[asyncio.Task[None], str], key: str) -> list[asyncio.Task[None]]:
    """``key``'s receives that have not finished (one that has, ended by an error or by a
    cancellation of its own, still counts until its task has run)."""
    return [future for future, k in receives.items() if k == key and not future.done()]


@dataclass(frozen=True)
class Traffic:
    """``Node``'s ``limits`` (``{key: most connections at once}``), ``priority`` and
    ``priority_share``, as given: unchecked values (``new_intake`` checks them, naming a bad
    one), so typed ``Any``, which nothing converts on the way."""

    limits: Any = None
    priority: Any = False
    priority_share: Any = 10


def new_intake(
    layer: GatewayLayer,
    keys: list[str],
    room: Callable[[], int],
    on_message: Callable[[str, Message], Awaitable[None] | None],
    traffic: Traffic,
) -> Intake:
    """The Node's intake, its options checked (``ValueError`` naming the bad one)."""
    checked = check_limits(keys, traffic.limits)
    priority, priority_share = traffic.priority, traffic.priority_share
    if not isinstance(priority, bool):
        raise ValueError(f"priority must be True or False, got {priority!r}")
    if not _is_count(priority_share) or priority_share < 2:
        raise ValueError(f"priority_share must be a whole number >= 2, got {priority_share!r}")
    if priority:
        return PriorityIntake(layer, keys, room, on_message, checked, priority_share)
    return Intake(layer, keys, room, on_message, checked)


def check_limits(keys: list[str], limits: object) -> dict[str, int]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise ValueError(f"limits must be a mapping of key to limit, got {limits!r}")
    for key, limit in limits.items():
        if key not in keys:
            raise ValueError(f"limits: {key!r} is not one of this Node's keys {keys!r}")
        if not _is_count(limit) or limit < 1:
            raise ValueError(
                f"limits: the limit of key {key!r} must be a whole number >= 1, got {limit!r}"
            )
    return dict(limits)


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
