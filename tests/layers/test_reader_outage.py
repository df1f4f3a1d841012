"""A queue reader that loses its server mid-round, then is stopped while it waits out the outage."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

import pytest

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.ops.redis_process import RedisProcess


async def test_a_reader_stopped_in_an_outage_reports_no_pops_on_the_wire(
    redis_factory: Callable[..., RedisProcess], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The round cut off by the lost server went with its connection: stopping the reader
    reads nothing back and warns of no lost messages (that warning is for rounds still
    queued on a live connection)."""
    caplog.set_level(logging.INFO, "distributed_asgi.layers")
    server = redis_factory()
    layer = RedisChannelLayer(hosts=[server.url], prefix=prefix)
    waiting = asyncio.ensure_future(layer.receive("test.outage"))
    try:
        await asyncio.sleep(0.3)  # the reader's round is blocked in its wait
        assert not waiting.done()
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 10
        while not any("unreachable" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the reader never noticed the lost server"
            await asyncio.sleep(0.05)
    finally:
        await layer.close()
        await asyncio.gather(waiting, return_exceptions=True)
    warnings = [r.getMessage() for r in caplog.records if "could not read back" in r.getMessage()]
    assert warnings == []
    assert waiting.cancelled()
