"""backlog.py: entries kept across loops, and the turn to pop a process inbox."""

from __future__ import annotations

from distributed_asgi.layers.backlog import Backlog


class Reader:
    """A reader as the backlog sees one: told of entries and of a free turn."""

    def __init__(self, waiting: int = 0) -> None:
        self.live = waiting
        self.closed = False
        self.turns_freed = 0
        self.notified: list[str] = []

    def notify(self, channel: str) -> bool:
        self.notified.append(channel)
        return not self.closed

    def turn_free(self) -> bool:
        self.turns_freed += 1
        return not self.closed

    def waiting(self) -> int:
        return self.live

    def gone(self) -> bool:
        return self.closed


def _two_readers() -> tuple[Backlog, Reader, Reader]:
    backlog = Backlog(expiry=60)
    first, second = Reader(), Reader()
    backlog.attach(first)
    backlog.attach(second)
    return backlog, first, second


def test_one_reader_at_a_time_has_the_turn_and_the_others_hear_it_end() -> None:
    backlog, first, second = _two_readers()
    assert backlog.take_turn(first)
    assert backlog.take_turn(first)  # its own turn still
    assert not backlog.take_turn(second)
    backlog.end_turn(second)  # not its turn: nothing happens
    assert first.turns_freed == second.turns_freed == 0
    backlog.end_turn(first)
    assert (first.turns_freed, second.turns_freed) == (0, 1)
    assert backlog.take_turn(second)


def test_the_turn_of_a_reader_gone_is_free() -> None:
    backlog, first, second = _two_readers()
    assert backlog.take_turn(first)
    first.closed = True  # its loop closed without ending the turn
    assert backlog.take_turn(second)


def test_a_reader_detached_ends_its_turn() -> None:
    backlog, first, second = _two_readers()
    assert backlog.take_turn(first)
    backlog.detach(first)
    assert second.turns_freed == 1
    assert backlog.take_turn(second)


def test_the_reader_in_its_turn_counts_the_other_loops_waiters() -> None:
    backlog = Backlog(expiry=60)
    popping, other, third = Reader(waiting=1), Reader(waiting=2), Reader(waiting=3)
    backlog.attach(popping)
    assert backlog.waiting_elsewhere(popping) == 0
    backlog.attach(other)
    backlog.attach(third)
    assert backlog.waiting_elsewhere(popping) == 5
    third.closed = True  # its loop closed with its waiters still counted
    assert backlog.waiting_elsewhere(popping) == 2


def test_entries_of_a_channel_come_out_oldest_first_and_others_are_told() -> None:
    backlog, source, other = _two_readers()
    assert not backlog.holds("a")
    backlog.put("a", b"1", source)
    backlog.put("a", b"2", source)
    backlog.put("a", b"0", source, front=True)  # a cancelled waiter's: it stays first
    assert backlog.holds("a") and other.notified == ["a", "a", "a"] and not source.notified
    dropped: list[bytes] = []
    taken = [backlog.take("a", lambda channel, entry: dropped.append(entry)) for _ in range(4)]
    assert taken == [b"0", b"1", b"2", None] and not dropped
    assert not backlog.holds("a")
