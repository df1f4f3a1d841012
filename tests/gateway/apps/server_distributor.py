"""A distributor.py as docs/servers.md has users write it, for each server's own command
(``hypercorn tests.gateway.apps.server_distributor:app`` and the like); the Redis URL and key
prefix come from the environment."""

import os

from distributed_asgi import create_path_distributor

app = create_path_distributor(
    url=os.environ["EDGE_REDIS_URL"],
    routes={"^/": "fidelity"},
    layer_options={"prefix": os.environ["EDGE_PREFIX"]},
)
