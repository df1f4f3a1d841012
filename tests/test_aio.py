"""``_aio``: a task's one timer (``Deadline``), the waits built on it and ``Turns``, in a real
event loop."""

from __future__ import annotations

import asyncio

import pytest

from distributed_asgi._aio import Deadline, DeadlineExceeded, Turns, wait_event, within


async def test_a_wait_that_outlives_its_deadline_raises_timeout_error() -> None:
    deadline = Deadline()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await deadline.wait(asyncio.sleep(10), loop.time() + 0.05)
    assert deadline.expired()
    assert 0.04 <= loop.time() - started < 1.0


async def test_a_wait_that_finishes_in_time_returns_and_leaves_no_timer() -> None:
    deadline = Deadline()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.01, future.set_result, 7)
    assert await deadline.wait(future, loop.time() + 0.05) == 7
    assert not deadline.expired()
    await asyncio.sleep(0.1)  # past the deadline: the task must not be cancelled now
    assert await deadline.wait(asyncio.sleep(0, "again"), deadline.now() + 1.0) == "again"


async def test_expire_ends_the_wait_under_way_from_another_task() -> None:
    deadline = Deadline()
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, deadline.expire)
    with pytest.raises(TimeoutError):
        await deadline.wait(asyncio.sleep(10), None)
    assert deadline.expired() and not deadline.waiting


async def test_expire_between_waits_does_nothing() -> None:
    deadline = Deadline()
    deadline.expire()
    assert not deadline.expired()
    assert await deadline.wait(asyncio.sleep(0, 1), None) == 1


async def test_a_timeout_error_from_inside_passes_through_as_not_expired() -> None:
    async def fails() -> None:
        raise TimeoutError("the client library's own")

    deadline = Deadline()
    with pytest.raises(TimeoutError, match="own"):
        await deadline.wait(fails(), deadline.now() + 1.0)
    assert not deadline.expired()


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def waits() -> None:
        deadline = Deadline()
        await deadline.wait(asyncio.sleep(10), deadline.now() + 5.0)

    task = asyncio.ensure_future(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_turns_go_first_come_first_served_and_a_cancelled_waiter_passes_its_turn() -> None:
    turns = Turns(asyncio.get_running_loop())
    order: list[str] = []

    async def take(name: str) -> None:
        if not turns.take_now():
            await turns.wait()
        try:
            order.append(name)
            await asyncio.sleep(0.01)
        finally:
            turns.done()

    assert turns.take_now()  # held here: everyone else waits
    tasks = [asyncio.ensure_future(take(name)) for name in "abc"]
    await asyncio.sleep(0)
    tasks[1].cancel()  # b leaves the queue before its turn
    turns.done()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["a", "c"]
    assert turns.take_now()  # free again


async def test_within_returns_what_finishes_in_time() -> None:
    assert await within(1.0, asyncio.sleep(0.01, "done")) == "done"
    await asyncio.sleep(0.05)  # its timer is gone: the task is not cancelled later


async def test_within_raises_deadline_exceeded_when_the_budget_runs_out() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await within(0.05, asyncio.sleep(10))
    assert loop.time() - started < 1.0


async def test_within_passes_a_timeout_error_from_inside_through() -> None:
    async def client_library_timeout() -> None:
        raise TimeoutError("the socket's own")

    with pytest.raises(TimeoutError, match="the socket's own"):
        await within(1.0, client_library_timeout())


async def test_within_nests_in_a_deadline_wait_of_the_same_task() -> None:
    outer = Deadline()
    with pytest.raises(DeadlineExceeded):
        await outer.wait(within(0.02, asyncio.sleep(10)), outer.now() + 5.0)
    assert not outer.expired()


async def test_wait_event_ends_when_the_event_is_set_or_the_time_is_up() -> None:
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    loop.call_later(0.01, event.set)
    started = loop.time()
    await wait_event(event, 5.0)
    assert event.is_set() and loop.time() - started < 1.0
    started = loop.time()
    await wait_event(asyncio.Event(), 0.05)  # never set: returns at the deadline
    assert 0.04 <= loop.time() - started < 1.0
