"""The seed README's distributor.py, with only the Redis address taken from the environment."""

import os

from distributed_asgi import create_path_distributor

app = create_path_distributor(
    host=os.environ["SEED_REDIS_HOST"],
    port=int(os.environ["SEED_REDIS_PORT"]),
    db=0,
    password=None,
    routes={
        "/api/([a-z-]+)": r"ASGI-\1",
        "/worker/([0-9]+)": r"worker-queue-\1",
        "/": "ALL-WEBSITE-TRAFFIC",
    },
)
