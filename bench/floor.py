"""``python -m bench.floor``: what the gateway's architecture costs with nothing of ours in it.

The *floor* is the least an edge, a worker and Redis can do to carry a hello world the
gateway's way: an ASGI app under the same uvicorn as the edge, which pushes each request to a
route list and waits for its answer on its own inbox list, and a worker that pops the route
list (``BLMPOP``, up to 100 at once), runs the same application in a task per request and
pushes the response. Both speak RESP over one asyncio protocol per connection, every command
issued in one loop turn going out in one write. No capacity, expiry, claims, liveness,
validation, flow control or failure handling: none of the gateway's contracts, so it is a
yardstick, not a design. Run side by side with direct uvicorn and the real gateway, the CPU per
request of each process says how far above the architecture's own cost each of ours is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from distributed_asgi.ops.redis_process import RedisProcess, free_port

from . import http as bench_http
from .report import plain_table

__all__ = ["app", "floor_server", "main"]

ROUTE = b"floor:route"
_ENV = "BENCH_FLOOR_REDIS_PORT"


# -- the smallest pipelined RESP client -------------------------------------------------------


def command(*args: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = (
            arg.encode() if isinstance(arg, str) else b"%d" % arg if isinstance(arg, int) else arg
        )
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse(buffer: bytearray, at: int) -> tuple[Any, int]:
    """One reply from ``buffer[at:]`` and where the next starts; IndexError if incomplete."""
    kind = buffer[at]
    end = buffer.index(b"\r\n", at)  # ValueError (incomplete) is turned into IndexError
    if kind in (43, 45):  # + -
        return bytes(buffer[at + 1 : end]), end + 2
    if kind == 58:  # :
        return int(buffer[at + 1 : end]), end + 2
    size = int(buffer[at + 1 : end])
    if size < 0:
        return None, end + 2
    if kind == 36:  # $
        stop = end + 2 + size
        if stop + 2 > len(buffer):
            raise IndexError
        return bytes(buffer[end + 2 : stop]), stop + 2
    items = []
    at = end + 2
    for _ in range(size):  # *
        item, at = parse(buffer, at)
        items.append(item)
    return items, at


class Connection(asyncio.Protocol):
    """Replies go to ``on_reply`` in order; what is sent in one loop turn is one write."""

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self.on_reply = on_reply
        self.buffer = bytearray()
        self.pending: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at = 0
        while at < len(buffer):
            try:
                reply, at_next = parse(buffer, at)
            except (IndexError, ValueError):
                break
            at = at_next
            self.on_reply(reply)
        del buffer[:at]

    def send(self, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self._flush)
        self.pending.append(data)

    def _flush(self) -> None:
        self.transport.write(b"".join(self.pending))
        self.pending.clear()


async def connect(port: int, on_reply: Callable[[Any], None]) -> Connection:
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(lambda: Connection(on_reply), "127.0.0.1", port)
    return connection


# -- the floor edge: an ASGI app under uvicorn ------------------------------------------------


class FloorEdge:
    def __init__(self) -> None:
        self.inbox = b"floor:inbox:" + os.urandom(4).hex().encode()
        self.waiting: dict[int, asyncio.Future[list[Any]]] = {}
        self.ids = itertools.count()
        self.writer: Connection | None = None
        self.reader: Connection | None = None

    def _pop(self) -> None:
        assert self.reader is not None
        self.reader.send(command("BLMPOP", 0, 1, self.inbox, "LEFT", "COUNT", 1000))

    def _popped(self, reply: Any) -> None:
        self._pop()
        for item in reply[1] if reply else ():
            number, *answer = msgpack.unpackb(item)
            future = self.waiting.pop(number, None)
            if future is not None and not future.done():
                future.set_result(answer)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                port = int(os.environ[_ENV])
                self.writer = await connect(port, lambda reply: None)
                self.reader = await connect(port, self._popped)
                self._pop()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.writer is not None
        message = await receive()
        number = next(self.ids)
        future = self.waiting[number] = asyncio.get_running_loop().create_future()
        fields = ("method", "path", "raw_path", "query_string", "headers", "client", "server")
        request = [number, self.inbox, *(scope[f] for f in fields), message.get("body", b"")]
        self.writer.send(command("RPUSH", ROUTE, msgpack.packb(request)))
        status, headers, body = await future
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


app = FloorEdge()


# -- the floor worker -------------------------------------------------------------------------


async def _serve(item: bytes, writer: Connection) -> None:
    number, inbox, method, path, raw_path, query, headers, client, server, body = msgpack.unpackb(
        item
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [tuple(header) for header in headers],
        "client": tuple(client),
        "server": tuple(server),
        "state": {},
    }
    answer: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.extend((message["status"], message.get("headers", [])))
        elif not message.get("more_body", False):
            reply = msgpack.packb([number, *answer, message.get("body", b"")])
            writer.send(command("RPUSH", inbox, reply))

    await bench_http.hello_app(scope, receive, send)


async def _worker(port: int) -> None:
    loop = asyncio.get_running_loop()
    writer = await connect(port, lambda reply: None)
    tasks: set[asyncio.Task[None]] = set()

    def popped(reply: Any) -> None:
        reader.send(command("BLMPOP", 0, 1, ROUTE, "LEFT", "COUNT", 100))
        for item in reply[1] if reply else ():
            task = loop.create_task(_serve(item, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    reader = await connect(port, popped)
    reader.send(command("BLMPOP", 0, 1, ROUTE, "LEFT", "COUNT", 100))
    await asyncio.Event().wait()


# -- side by side -----------------------------------------------------------------------------


@contextlib.contextmanager
def floor_server() -> Iterator[bench_http.Setup]:
    """The floor's edge (uvicorn, as the gateway's), worker and a private Redis."""
    port = free_port()
    with RedisProcess() as redis:
        assert redis.process is not None
        env = {**os.environ, _ENV: str(redis.port)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--worker", str(redis.port)],
            cwd=bench_http.ROOT,
            env=env,
        )
        args = [sys.executable, "-m", "uvicorn", "bench.floor:app", "--host", "127.0.0.1"]
        edge = subprocess.Popen(
            [*args, "--port", str(port), *bench_http._uvicorn_settings()],
            cwd=bench_http.ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            bench_http._wait_until_correct(port, [worker, edge])
            pids = {"edge": edge.pid, "worker": worker.pid, "redis": redis.process.pid}
            yield bench_http.Setup(port, pids, redis.url)
        finally:
            bench_http._stop([edge, worker])


SETUPS = {
    "direct": bench_http.direct_server,
    "floor": floor_server,
    "gateway": bench_http.gateway_server,
}
ROLES = ("edge", "worker", "redis")


def compare(sizes: bench_http.HttpSizes, loop: str) -> dict[str, list[bench_http.Run]]:
    """Each setup's runs, in rotation."""
    runs: dict[str, list[bench_http.Run]] = {name: [] for name in SETUPS}
    for _ in range(sizes.runs):
        for name, start in SETUPS.items():
            with start() as setup:
                bench_http.measure(setup.port, sizes, loop, duration=sizes.warmup)
                result = bench_http.measure_run(setup, sizes, loop)
                runs[name].append(result)
                print(f"  {name:8s} {bench_http._run_line(result)}", flush=True)
    return runs


def rows(runs: dict[str, list[bench_http.Run]]) -> list[list[str]]:
    def median(name: str, figure: Callable[[bench_http.Run], float | None]) -> float:
        return statistics.median(v for r in runs[name] if (v := figure(r)) is not None)

    direct = median("direct", lambda r: r.cpu_us("uvicorn"))
    out = [["req/s", *(f"{median(n, lambda r: r.load.rps):,.0f}" for n in SETUPS), ""]]
    for role in ROLES:
        floor = median("floor", lambda r, role=role: r.cpu_us(role))
        ours = median("gateway", lambda r, role=role: r.cpu_us(role))
        out.append(
            [
                f"{role} CPU per request (µs)",
                f"{direct:.0f} (uvicorn)",
                f"{floor:.0f} ({floor / direct:.2f}x direct)",
                f"{ours:.0f} ({ours / direct:.2f}x direct)",
                f"{ours / floor:.2f}x",
            ]
        )
    commands = [median(n, lambda r: r.commands) for n in ("floor", "gateway")]
    out.append(["Redis commands per request", "-", *(f"{c:.2f}" for c in commands), ""])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--runs", type=int, default=2, help="measured runs per setup")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--worker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        # In the event loop the gateway's worker runs on (its --loop).
        bench_http.run_in(bench_http.event_loop(), _worker(args.worker))
        return 0
    sizes = bench_http.HttpSizes(args.connections, args.seconds, 2.0, args.runs)
    print(f"floor: direct uvicorn, the floor and the gateway; {args.runs} run(s) each")
    runs = compare(sizes, bench_http.event_loop())
    header = ["figure", "direct", "floor", "gateway", "gateway / floor"]
    print(plain_table(header, rows(runs), "lrrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
