"""runner.py with the channel layer built from a ``hosts`` list: several shards, a cluster URL,
or ``local_hosts`` for RedisLocalChannelLayer. CONFIG as in runner.py plus ``"hosts"`` and
optionally ``"local_hosts"``; the layer goes to the edge and the Node as ``layer=``."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def build_layer(config: dict[str, Any]) -> Any:
    from distributed_asgi.layers import RedisChannelLayer, RedisLocalChannelLayer

    if config.get("local_hosts"):
        return RedisLocalChannelLayer(
            hosts=config["hosts"], local_hosts=config["local_hosts"], prefix=config["prefix"]
        )
    return RedisChannelLayer(hosts=config["hosts"], prefix=config["prefix"])


def edge(config: dict[str, Any]) -> None:
    import uvicorn

    from distributed_asgi import create_path_distributor

    app = create_path_distributor(
        layer=build_layer(config),
        routes=[tuple(r) for r in config["routes"]],
        **config.get("options", {}),
    )
    uvicorn.run(app, host="127.0.0.1", port=int(config["port"]), log_level="info", lifespan="on")


def node(config: dict[str, Any]) -> None:
    from distributed_asgi import Node
    from tests.gateway.runner import load

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options = dict(config.get("options", {}))
    Node(
        layer=build_layer(config),
        keys=list(config["keys"]),
        app=load(str(config["app"])),
        **options,
    ).run()


if __name__ == "__main__":
    {"edge": edge, "node": node}[sys.argv[1]](json.loads(sys.argv[2]))
