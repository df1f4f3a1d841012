"""The supervisor's stop: a signal stops ``up`` wherever it lands in the wait."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A child process, so that a wait that never ends fails the test instead of hanging the suite.
# It raises SIGINT at the 1st, 2nd, ... line that runs inside System.wait() (the CPython code the
# wait calls included), one line per round, and checks every round's wait returns.
_STOP_AT_EVERY_LINE = textwrap.dedent(
    """
    import signal, sys
    from distributed_asgi.ops import supervisor

    supervisor.STOP_POLL = 0.001
    for target in range(int(sys.argv[1])):
        system = supervisor.System(supervisor.UpConfig(app="x"))
        previous = signal.signal(signal.SIGINT, system._on_signal)
        lines = 0

        def trace(frame, event, arg):
            global lines
            if event == "line":
                if lines == target:
                    signal.raise_signal(signal.SIGINT)  # handled at the next bytecode
                lines += 1
            return trace

        sys.settrace(trace)
        system.wait()
        sys.settrace(None)
        signal.signal(signal.SIGINT, previous)
        assert system.stopping and lines > target, (target, lines)
    print("every wait stopped")
    """
)


def test_a_stop_signal_at_any_line_of_the_wait_stops_it() -> None:
    """A signal handler runs in the main thread between any two bytecodes, also inside a
    lock's critical section: one that took a lock the wait holds would wait for itself."""
    done = subprocess.run(
        [sys.executable, "-c", _STOP_AT_EVERY_LINE, "100"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "every wait stopped"
