"""The seed README's worker.py, with only the Redis address taken from the environment."""

import os

from distributed_asgi import Node


class ASGIApp:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200})

        await send({"type": "http.response.body", "body": b"Hello World!"})


node = Node(
    host=os.environ["SEED_REDIS_HOST"],
    port=os.environ["SEED_REDIS_PORT"],  # a string, as in the seed
    password=None,
    cls=ASGIApp,
    key="ASGI-testing",
)

print("Starting worker", flush=True)
node.run()
