"""The far end of the one-operation cost case: ``python -m bench.peer SPEC``.

SPEC is JSON: ``{"kind", "url", "prefix", "members"}``. It runs ``bench.cases.serve_peer`` with a
layer of that kind, so the measured process's CPU holds only its own side of each operation.
"""

from __future__ import annotations

import asyncio
import json
import sys

from .cases import serve_peer
from .layer import Kit


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    kit = Kit(spec["kind"], spec["url"], spec["prefix"])
    asyncio.run(serve_peer(kit, int(spec["members"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
