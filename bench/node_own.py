"""``python -m bench.node_own``: the Node's own code per request, with no Redis and no edge.

The connects of ``bench.drain`` (a whole request, a claim asked for) are each decoded
(``decode_frame``) and served by a ``NodeConnection`` running the hello world, in this
process, over a layer that answers at once without I/O (``Stub``: a claim always got, a push
counted). This process's CPU over the batch, divided by the requests, is what the Node's own
code costs a request; the same batch is then timed in its parts: the connect's
``msgpack.unpackb`` (which the layer's deserializer does before the Node sees it),
``decode_frame``, making the ``NodeConnection``, and its ``run``. The cyclic collector is off
while measuring (the ``worker`` command sets it to run rarely; see ops/collector.py), so the
figures repeat within a few percent where a whole worker's move by ten: the one to watch
while changing the Node's request path, beside ``bench.drain`` for the rest of the worker.
It measures the tree it runs in; to compare two builds, run it in each (``make compile``
first in both).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from distributed_asgi._liveness import Liveness
from distributed_asgi.core.frames import Connect, decode_frame
from distributed_asgi.core.types import Message
from distributed_asgi.node.acceptance import NodeClaims
from distributed_asgi.node.connection import NodeConnection

from . import drain, own
from . import http as bench_http

__all__ = ["Stub", "main", "measure"]

_EDGE_PEER = "liveness.edge!1"  # the edge's liveness channel, named in each connect
_NODE_PEER = "liveness.node!1"


class Stub:
    """A claiming layer that does no I/O: every claim is got, every push counted."""

    def __init__(self) -> None:
        self.pushed = 0

    async def send(self, channel: str, message: Message) -> None:
        self.pushed += 1

    async def push(self, channel: str, message: Message) -> None:
        self.pushed += 1

    async def receive(self, channel: str) -> Message:
        await asyncio.get_running_loop().create_future()  # nothing ever comes
        raise AssertionError("unreachable")

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.stub!1"

    async def close(self) -> None:
        pass

    async def claim(self, channel: str, holder: str, ttl: float) -> str | None:
        return None  # got

    async def holder(self, channel: str) -> str | None:
        return None


def _connects(requests: int) -> list[Message]:
    deadline = time.time() + 300
    return [drain.connect_frame("edge.stub!r", _EDGE_PEER, deadline) for _ in range(requests)]


async def _served(requests: int) -> dict[str, float]:
    """Seconds of this process's CPU per request: in all, and by part."""
    layer = Stub()
    loop = asyncio.get_running_loop()
    liveness: Liveness[NodeConnection] = Liveness(
        layer, "liveness", 2.0, NodeConnection.edge_lost, NodeConnection.edge_dropped
    )
    claims = NodeClaims(layer)
    app: Callable[..., Awaitable[None]] = bench_http.hello_app
    done: list[NodeConnection] = []

    def connection(connect: Connect) -> NodeConnection:
        scope: dict[str, Any] = connect.scope
        scope["asgi"] = {**scope.get("asgi", {}), "version": "3.0"}  # as Node._start does
        scope["state"] = {}
        return NodeConnection(
            layer, connect, scope, heartbeat_interval=2.0, heartbeat_misses=3,
            on_done=done.append, liveness=liveness, peer=_NODE_PEER, node_id="stub", loop=loop,
            claims=claims,
        )  # fmt: skip

    frames = _connects(requests)
    started = time.process_time()
    for frame in frames:
        await connection(decode_frame(frame)).run(app)
    whole = time.process_time() - started
    served = len(done)
    packed = [msgpack.packb(frame) for frame in _connects(requests)]
    started = time.process_time()
    unpacked = [msgpack.unpackb(data) for data in packed]
    unpack = time.process_time() - started
    started = time.process_time()
    decoded = [decode_frame(frame) for frame in unpacked]
    decode = time.process_time() - started
    started = time.process_time()
    made = [connection(connect) for connect in decoded]
    make = time.process_time() - started
    started = time.process_time()
    for each in made:
        await each.run(app)
    run = time.process_time() - started
    await asyncio.sleep(0)  # the held starts' flush callbacks run (nothing is held any more)
    if served != requests or len(done) != 2 * requests or layer.pushed != 2 * requests:
        raise AssertionError(
            f"{requests} requests: {len(done)} connections ended, {layer.pushed} frames pushed"
        )
    await liveness.aclose()
    return {
        "the Node's own code": whole / requests,
        "msgpack.unpackb of the connect": unpack / requests,
        "decode_frame": decode / requests,
        "NodeConnection(...)": make / requests,
        "NodeConnection.run": run / requests,
    }


def measure(requests: int) -> dict[str, float]:
    """One batch of ``requests``, the collector off: µs of CPU per request, by part."""
    return own.measure(_served, requests)


def main(argv: list[str] | None = None) -> int:
    return own.run_main("python -m bench.node_own", __doc__, "the Node's", _served, argv)


if __name__ == "__main__":
    sys.exit(main())
