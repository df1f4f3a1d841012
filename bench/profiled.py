"""``python -m bench.profiled OUTPUT MODULE [ARGS...]``: run a module, profiling it on request.

As ``python -m cProfile -o OUTPUT -m MODULE ARGS``, except that the profiler starts switched
off: each SIGUSR1 switches it on or off, so the profile holds the measured load only (not the
start-up, the imports or the warm-up). The stats are written to OUTPUT when the module exits.
The clock is cProfile's default (the wall clock): a CPU clock costs a system call per event,
which slows the process down far more than what it measures.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from types import FrameType


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    output, module, args = argv[1], argv[2], argv[3:]
    sys.argv = [module, *args]
    profiler = cProfile.Profile()
    enabled = False

    def toggle(signum: int, frame: FrameType | None) -> None:
        nonlocal enabled
        if enabled:
            profiler.disable()
        else:
            profiler.enable()
        enabled = not enabled

    signal.signal(signal.SIGUSR1, toggle)
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if enabled:
            profiler.disable()
        profiler.dump_stats(output)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
