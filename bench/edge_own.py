"""``python -m bench.edge_own``: the edge's own code per request, with no Redis, Node or server.

The ``Distributor`` is called as an ASGI server calls it, in this process, once per request of
the hello world (a bodiless GET), over a layer that answers at once without I/O (``Stub``: each
connect is answered by the accept a Node sends for a whole request, with its response in it,
which the next ``receive()`` of the reply channel gets without waiting). This process's CPU over
the batch, divided by the requests, is the edge's code with the layer's I/O and uvicorn taken
out; the same driver calling the hello world itself (what uvicorn's part would be, with no
HTTP) and the stub's own answering are measured alone, so their shares can be taken off. The
cyclic collector is off while measuring, as in ``bench.node_own``: the figures repeat within a
few percent where a whole edge's move by ten. It measures the tree it runs in.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

from distributed_asgi import Distributor
from distributed_asgi.core.frames import encode_accept
from distributed_asgi.core.types import Message

from . import drain, node_own, own
from . import http as bench_http

__all__ = ["Stub", "main", "measure"]

_NODE_PEER = "liveness.node!1"  # the Node's liveness channel, named in each accept
_RESPONSE: list[Message] = [
    {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]},
    {"type": "http.response.body", "body": b"Hello, world!", "more_body": False},
]


class Stub(node_own.Stub):
    """``bench.node_own``'s layer with no I/O (every claim got, every push counted), which also
    answers a connect at once with its accept, for the next ``receive()`` of its reply channel."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Message] = {}  # reply channel -> the accept waiting there
        self.connects = 0
        self._names = itertools.count()

    async def send(self, channel: str, message: Message) -> None:
        if "!" in channel:
            self.pushed += 1
            return
        self.connects += 1
        self.answers[message["reply"]] = answer(message)

    async def receive(self, channel: str) -> Message:
        found = self.answers.pop(channel, None)
        if found is not None:
            return found
        return await super().receive(channel)  # nothing else ever comes

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.stub!{next(self._names):x}"


def answer(connect: Message) -> Message:
    """The accept a Node sends for a whole request it claimed, with the response in it."""
    return encode_accept(
        connect["id"], "node.stub!c", 2.0, list(_RESPONSE), peer=_NODE_PEER, round=0, node="stub"
    )


async def _serve(app: Any, requests: int) -> tuple[float, int]:
    """Seconds of this process's CPU per request of ``app`` driven as a server drives it, and
    the number of responses that came whole."""
    whole = 0

    async def receive() -> Message:
        return drain.REQUEST

    async def send(message: Message) -> None:
        nonlocal whole
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            whole += 1

    scopes = [{**drain.SCOPE, "state": {}} for _ in range(requests)]
    started = time.process_time()
    for scope in scopes:
        await app(scope, receive, send)
    return (time.process_time() - started) / requests, whole


async def _measured(requests: int) -> dict[str, float]:
    layer = Stub()
    distributor = Distributor(layer, [("^/", "hello")], heartbeat_interval=2.0)
    await _serve(distributor, 100)  # the liveness channel made, the first imports done
    layer.connects = 0
    edge, answered = await _serve(distributor, requests)
    if answered != requests or layer.connects != requests or layer.answers:
        raise AssertionError(
            f"{requests} requests: {answered} whole responses, {layer.connects} connects, "
            f"{len(layer.answers)} accepts not taken"
        )
    app, _ = await _serve(bench_http.hello_app, requests)
    connect = {"id": "c1", "reply": "edge.stub!1"}
    started = time.process_time()
    for _ in range(requests):
        answer(connect)
    stub = (time.process_time() - started) / requests
    await distributor.aclose()
    return {
        "the distributor, as driven": edge,
        "the stub's answer (in it)": stub,
        "the hello world, as driven": app,
        "the edge's own code": edge - stub - app,
    }


def measure(requests: int) -> dict[str, float]:
    """One batch of ``requests``, the collector off: µs of CPU per request, by part."""
    return own.measure(_measured, requests)


def main(argv: list[str] | None = None) -> int:
    return own.run_main("python -m bench.edge_own", __doc__, "the edge's", _measured, argv)


if __name__ == "__main__":
    sys.exit(main())
