"""A short tour of the channel layer: two processes talking through Redis.

Run with ``python -m distributed_asgi.ops.layer_demo``. With no ``REDIS_URL`` it starts a private
server. A child process joins a group and answers; the parent sends to it directly and to the
group, with encryption on, and shows what Redis actually stores.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.ops.redis_process import RedisProcess

KEYS = ["demo-key-" + "k" * 40]
PREFIX = "demo"


def _layer(url: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[url], prefix=PREFIX, symmetric_encryption_keys=KEYS)


async def _child(url: str) -> None:
    layer = _layer(url)
    inbox = await layer.new_channel()
    await layer.group_add("listeners", inbox)
    await layer.send("demo.hello", {"inbox": inbox, "pid": os.getpid()})
    while True:
        message = await layer.receive(inbox)
        if message["type"] == "stop":
            break
        await layer.send(
            message["reply_to"],
            {"echo": message["text"], "from_pid": os.getpid(), "kind": message["type"]},
        )
    await layer.group_discard("listeners", inbox)
    await layer.close()


def _child_main(url: str) -> None:
    asyncio.run(_child(url))


async def _parent(url: str) -> None:
    layer = _layer(url)
    reply_to = await layer.new_channel()
    hello = await asyncio.wait_for(layer.receive("demo.hello"), 10)
    print(f"child process {hello['pid']} is listening on {hello['inbox']}")

    started = time.perf_counter()
    await layer.send(hello["inbox"], {"type": "direct", "text": "ping", "reply_to": reply_to})
    answer = await asyncio.wait_for(layer.receive(reply_to), 5)
    elapsed = (time.perf_counter() - started) * 1000
    print(f"direct send  -> {answer['echo']!r} from pid {answer['from_pid']} in {elapsed:.2f} ms")

    await layer.group_send("listeners", {"type": "group", "text": "hi all", "reply_to": reply_to})
    answer = await asyncio.wait_for(layer.receive(reply_to), 5)
    print(f"group_send   -> {answer['echo']!r} via group 'listeners'")

    server, queue_key = await layer.locate("q", "demo.at-rest")
    await layer.send("demo.at-rest", {"secret": "card 4111-1111"})
    (stored,) = await server.execute(("LINDEX", queue_key, 0))
    print(f"at rest      -> {stored[:60]!r}... (Fernet, no plaintext in Redis)")
    await layer.receive("demo.at-rest")

    await layer.send(hello["inbox"], {"type": "stop"})
    await layer.flush()
    await layer.close()


def main() -> int:
    url = os.environ.get("REDIS_URL")
    server = None
    if not url:
        server = RedisProcess().start()
        url = server.url
        print(f"started a private server: {os.path.basename(server.binary)} at {url}")
    try:
        child = multiprocessing.get_context("spawn").Process(target=_child_main, args=(url,))
        child.start()
        asyncio.run(_parent(url))
        child.join(10)
        print(f"child exited with {child.exitcode}; demo done")
        return 0 if child.exitcode == 0 else 1
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    sys.exit(main())
