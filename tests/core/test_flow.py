"""core/flow.py: the credit window of one connection."""

from __future__ import annotations

import asyncio

from distributed_asgi.core.flow import CreditWindow
from distributed_asgi.core.frames import CREDIT_WINDOW


async def test_a_sender_takes_the_window_then_waits_for_credit() -> None:
    window = CreditWindow()
    for _ in range(CREDIT_WINDOW):
        assert await asyncio.wait_for(window.take(), 1)
    waiting = asyncio.ensure_future(window.take())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    window.granted(2)
    assert await asyncio.wait_for(waiting, 1)
    assert window.available == 1


async def test_a_waiting_sender_gives_up_when_the_connection_is_over() -> None:
    window = CreditWindow()
    window.available = 0
    over = False
    waiting = asyncio.ensure_future(window.take(lambda: over))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    over = True
    window.release()
    assert await asyncio.wait_for(waiting, 1) is False
    assert window.available == 0  # nothing taken


def test_credit_is_given_back_in_half_windows() -> None:
    window = CreditWindow()
    given = []
    for _ in range(CREDIT_WINDOW * 2):
        window.consumed()
        if frames := window.due():
            given.append(frames)
    assert given == [CREDIT_WINDOW // 2] * 4
    # A short exchange gives nothing back.
    short = CreditWindow()
    short.consumed()
    assert short.due() == 0 and short.untold == 1
