"""``distributed-asgi edge`` as the tests run it under each server: the command itself, with
marker files saying that the distributor saw lifespan start-up and that it closed its layer.

``python servers_edge.py edge --server hypercorn ...``; markers go to ``$MARKER_DIR``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from distributed_asgi.edge.distributor import Distributor
from distributed_asgi.ops.cli.main import main


def _mark(name: str) -> None:
    Path(os.environ["MARKER_DIR"], name).write_text(str(os.getpid()))


def _watch_lifespan_and_close() -> None:
    call, aclose = Distributor.__call__, Distributor.aclose

    async def watched_call(self: Distributor, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":

            async def watched_receive() -> Any:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    _mark("edge-lifespan-startup")
                return message

            return await call(self, scope, watched_receive, send)
        return await call(self, scope, receive, send)

    async def watched_aclose(self: Distributor) -> None:
        await aclose(self)
        _mark("edge-layer-closed")

    Distributor.__call__ = watched_call  # type: ignore[method-assign]
    Distributor.aclose = watched_aclose  # type: ignore[method-assign]


if __name__ == "__main__":
    _watch_lifespan_and_close()
    main()
