"""``python -m bench [SECTION] [--quick] [--no-write] [--loop asyncio|uvloop] [--strict]``;
``python -m bench ab REV`` compares this tree with another revision (bench/ab.py)."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any

from . import cores, http, idle, layer, scaling

# Section name -> runner(sizes, loop=..., write=...) returning True when every target passes;
# each section has its own kind of sizes (full, quick).
SECTIONS: dict[str, tuple[Callable[..., bool], Any, Any]] = {
    "layer": (layer.main, layer.FULL, layer.QUICK),
    "http": (http.main, http.FULL, http.QUICK),
    "idle": (idle.main, idle.FULL, idle.QUICK),
    "scaling": (scaling.main, scaling.FULL, scaling.QUICK),
    "cores": (cores.main, http.FULL, http.QUICK),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ab"]:  # this tree against another revision (bench/ab.py)
        from . import ab

        return ab.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of distributed_asgi, side by side with what it replaces.",
    )
    parser.add_argument(
        "section",
        nargs="?",
        default="all",
        choices=["all", *SECTIONS],
        help="which section to run (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer messages and one run: a smoke run (implies --no-write)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the measuring processes (default: asyncio)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    names = list(SECTIONS) if args.section == "all" else [args.section]
    passed = True
    crashed: list[str] = []
    for name in names:
        runner, full, quick = SECTIONS[name]
        try:
            passed &= runner(
                quick if args.quick else full,
                loop=args.loop,
                write=not (args.no_write or args.quick),
            )
        except Exception:
            # One broken section must not hide the others' figures.
            traceback.print_exc()
            print(f"\nsection {name!r} crashed; its figures were not recorded", file=sys.stderr)
            crashed.append(name)
    if crashed:
        return 2
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
