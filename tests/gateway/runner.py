"""Start one gateway process for the tests: ``runner.py edge CONFIG`` or ``runner.py node CONFIG``.

CONFIG is JSON. Edge: ``{"url", "prefix", "port", "routes": [[regex, key], ...], "options"}``.
Node: ``{"url", "prefix", "app": "module:attr", "keys": [...], "options"}``. Both take
``"layer"``: more channel layer options (capacities, encryption keys, size limit).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def edge(config: dict[str, object]) -> None:
    import uvicorn

    from distributed_asgi import create_path_distributor

    app = create_path_distributor(
        url=str(config["url"]),
        routes=[tuple(r) for r in config["routes"]],  # type: ignore[attr-defined]
        layer_options={"prefix": config["prefix"], **config.get("layer", {})},  # type: ignore[dict-item]
        **config.get("options", {}),  # type: ignore[arg-type]
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(config["port"]),  # type: ignore[call-overload]
        log_level="info",
        lifespan="on",
        **config.get("uvicorn", {}),  # type: ignore[arg-type]
    )


def node(config: dict[str, object]) -> None:
    from distributed_asgi import Node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options: dict[str, Any] = dict(config.get("options", {}))  # type: ignore[call-overload]
    application = load(str(config["app"]))
    kind = options.pop("as", "app")
    Node(
        url=str(config["url"]),
        keys=list(config["keys"]),  # type: ignore[call-overload]
        layer_options={"prefix": config["prefix"], **config.get("layer", {})},  # type: ignore[dict-item]
        **{kind: application},
        **options,
    ).run()


if __name__ == "__main__":
    {"edge": edge, "node": node}[sys.argv[1]](json.loads(sys.argv[2]))
