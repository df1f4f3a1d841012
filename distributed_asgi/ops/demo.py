"""``make demo``: the gateway on this machine, serving the Starlette example, checked live.

Runs ``distributed-asgi up examples.starlette_app.app:app --workers 2`` (a private Redis server,
two worker processes, the edge), sends it real HTTP and WebSocket requests itself and prints
what came back and which worker answered, then keeps serving until Ctrl-C. ``--once`` (or
``DEMO_ONCE=1``) stops after the check, with exit code 0 only if every check passed.

The channel layer has a tour of its own: ``python -m distributed_asgi.ops.layer_demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from distributed_asgi.ops.redis_process import free_port
from distributed_asgi.ops.supervisor import System, UpConfig

APP = "examples.starlette_app.app:app"


class CheckFailed(Exception):
    pass


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


async def self_check(base_url: str, out: Callable[[str], None] = print) -> None:
    """Real requests through the edge; raises CheckFailed on the first wrong answer."""
    import httpx
    import websockets

    async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
        answers = await asyncio.gather(
            *(client.get("/api/hello", params={"name": f"demo-{n}"}) for n in range(6))
        )
        for n, response in enumerate(answers):
            _expect(response.status_code == 200, f"GET /api/hello -> {response.status_code}")
            _expect(response.json()["message"] == f"Hello, demo-{n}!", response.text)
        pids = sorted({response.json()["worker_pid"] for response in answers})
        out(f"  ok  6 x GET /api/hello          -> 200, answered by worker pid(s) {pids}")

        body = "distributed ✓".encode() * 1000
        response = await client.post(
            "/api/echo", content=body, headers={"content-type": "text/plain; charset=utf-8"}
        )
        _expect(response.status_code == 200 and response.content == body, "POST /api/echo")
        out(f"  ok  POST /api/echo ({len(body)} bytes) -> 200, same bytes back")

        response = await client.get("/api/stream")
        expected = "".join(f"chunk {n}\n" for n in range(1, 6))
        _expect(response.text == expected, f"GET /api/stream -> {response.text!r}")
        out("  ok  GET /api/stream             -> 5 chunks, in order")

    ws_url = base_url.replace("http://", "ws://", 1) + "/ws"
    async with websockets.connect(ws_url, open_timeout=15) as ws:
        greeting = await asyncio.wait_for(ws.recv(), 15)
        await ws.send("hello")
        echoed = await asyncio.wait_for(ws.recv(), 15)
        await ws.send(b"\x00\x01binary")
        binary = await asyncio.wait_for(ws.recv(), 15)
    _expect(str(greeting).startswith("connected to worker"), f"WebSocket greeting {greeting!r}")
    _expect(echoed == "echo: hello", f"WebSocket text echo {echoed!r}")
    _expect(binary == b"\x00\x01binary", f"WebSocket binary echo {binary!r}")
    out(f"  ok  WebSocket /ws               -> {greeting!r}, text and binary echoed")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distributed_asgi.ops.demo", description=__doc__
    )
    parser.add_argument("--once", action="store_true", help="exit after the self-check")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="edge port (default 8000 if free)")
    args = parser.parse_args(argv)
    once = args.once or os.environ.get("DEMO_ONCE", "") not in ("", "0")

    root = Path(__file__).resolve().parents[2]
    if not (root / "examples" / "starlette_app" / "app.py").exists():
        print(f"the demo runs the example in examples/; not found under {root}", file=sys.stderr)
        return 1
    port = args.port or (8000 if _port_is_free(8000) else free_port())
    config = UpConfig(
        app=APP,
        workers=args.workers,
        port=port,
        app_dir=str(root),
        log_level="warning",
        drain_timeout=5.0,
        redis_url=os.environ.get("REDIS_URL") or None,
    )

    def check(system: System) -> None:
        print(f"\nChecking {system.url} with real requests:", flush=True)
        asyncio.run(self_check(system.url, lambda line: print(line, flush=True)))
        if once:
            print("All checks passed; stopping (--once).", flush=True)
            system.request_stop()
        else:
            print(f"\nAll checks passed. Open {system.url} -- Ctrl-C to stop.", flush=True)

    code = System(config, out=lambda text: print(text, flush=True)).serve(on_ready=check)
    if code != 0:
        print(f"Stopped with exit code {code}.")
    return code


if __name__ == "__main__":
    sys.exit(main())
