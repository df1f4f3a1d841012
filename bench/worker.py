"""One measurement in a fresh interpreter: ``python -m bench.worker SPEC``.

SPEC is JSON: ``{"case", "kind", "url", "prefix", "sizes", "loop"}``. The result is printed as
one line ``RESULT {json}``; anything else on stdout or stderr is diagnostics.
"""

from __future__ import annotations

import asyncio
import json
import sys

from .cases import Sizes
from .layer import run_case


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    sizes = Sizes(**spec["sizes"])
    coroutine = run_case(spec["case"], spec["kind"], spec["url"], spec["prefix"], sizes)
    if spec.get("loop") == "uvloop":
        import uvloop

        result = uvloop.run(coroutine)
    else:
        result = asyncio.run(coroutine)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
