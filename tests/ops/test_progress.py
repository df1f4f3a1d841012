"""``up``'s start-up progress: plain numbered lines off a terminal, coloured ones on it."""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from distributed_asgi.ops import supervisor
from distributed_asgi.ops.progress import StartupProgress
from distributed_asgi.ops.redis_process import free_port


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_as_steps_begin_and_end() -> None:
    lines: list[str] = []
    progress = StartupProgress(3, lines.append)
    assert not progress.styled  # out is not print: never styled
    with progress.step("redis", "starting a private server") as step:
        assert lines == ["[1/3] redis: starting a private server ..."]
        step.done("ready at redis://127.0.0.1:1/0, pid 7")
    with progress.step("worker 1") as step:
        step.done("started, pid 8", timed=False)
    with progress.step("edge"):
        pass  # left without done(): reported done anyway
    assert lines[1].startswith("[1/3] redis: ready at redis://127.0.0.1:1/0, pid 7 (")
    assert lines[1].endswith(" s)")
    assert lines[2:] == ["[2/3] worker 1: started, pid 8", "[3/3] edge: ok (0.00 s)"]


def test_overlapping_steps_keep_their_numbers() -> None:
    lines: list[str] = []
    progress = StartupProgress(2, lines.append)
    first = progress.begin("worker 1", "starting app, pid 1")
    second = progress.begin("edge", "starting on http://x, pid 2")
    second.done("accepting connections", timed=False)
    first.done("listening on app", timed=False)
    assert lines == [
        "[1/2] worker 1: starting app, pid 1 ...",
        "[2/2] edge: starting on http://x, pid 2 ...",
        "[2/2] edge: accepting connections",
        "[1/2] worker 1: listening on app",
    ]


def test_an_exception_marks_the_step_failed_and_propagates() -> None:
    lines: list[str] = []
    progress = StartupProgress(2, lines.append)
    with pytest.raises(RuntimeError), progress.step("edge", "starting on http://x"):
        raise RuntimeError("port taken")
    assert lines[0] == "[1/2] edge: starting on http://x ..."
    assert lines[1].startswith("[1/2] edge: FAILED failed (")


def test_styled_on_a_terminal_with_markup_in_values_escaped() -> None:
    terminal = FakeTerminal()
    progress = StartupProgress(1, print, stream=terminal)
    assert progress.styled
    with progress.step("edge", "starting on http://[::1]:8000") as step:
        step.done("accepting connections on http://[::1]:8000, pid 9")
    text = terminal.getvalue()
    assert "\x1b[" in text  # coloured
    assert "✓" in text and "…" in text
    # An IPv6 URL's brackets are text, not rich markup.
    assert "http://[::1]:8000, pid 9" in text


def test_print_to_a_file_is_plain(capsys: pytest.CaptureFixture[str]) -> None:
    progress = StartupProgress(1)  # out=print, stdout captured: not a terminal
    assert not progress.styled
    with progress.step("redis") as step:
        step.done("reachable", timed=False)
    assert capsys.readouterr().out == "[1/1] redis: reachable\n"


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_up_on_a_terminal_colours_its_progress(redis_url: str, prefix: str) -> None:
    """The real command, its stdout a pseudo-terminal: the steps come coloured, then the plain
    summary, and Ctrl-C still stops everything cleanly."""
    master, slave = os.openpty()
    args = ["up", "json:dumps", "--port", str(free_port()), "--redis", redis_url]
    args += ["--prefix", prefix, "--log-level", "warning", "--drain-timeout", "1"]
    up = subprocess.Popen(
        [sys.executable, "-m", "distributed_asgi", *args],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"},
    )
    os.close(slave)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"Ctrl-C stops everything" not in output:
            assert time.monotonic() < deadline and up.poll() is None, output.decode(
                errors="replace"
            )
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                output += os.read(master, 65536)
        text = output.decode()
        assert "\x1b[" in text
        assert re.search(r"✓.*\[1/3\].*redis.*: .*reachable", text)
        assert re.search(r"✓.*\[3/3\].*edge.*: .*accepting connections on http://", text)
        up.send_signal(signal.SIGINT)
        # Read on while it stops: up and its children write to this terminal, and one whose
        # writes fill the terminal's buffer would block there, never exiting.
        deadline = time.monotonic() + 60
        while up.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):  # the terminal closes as the last one exits
                    output += os.read(master, 65536)
        assert up.poll() == 0, output.decode(errors="replace")[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        os.close(master)


def test_a_worker_missing_from_redis_is_reported_running_not_failed(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str
) -> None:
    """A worker whose presence never shows (say, an ACL user that may not write it) does not
    stop ``up``: it is reported as running once the edge is up and the wait is over."""
    monkeypatch.setattr(supervisor, "PRESENCE_WAIT", 0.3)
    monkeypatch.setattr(supervisor.System, "_listening_pids", lambda self: set())
    config = supervisor.UpConfig(
        app="json:dumps", port=free_port(), redis_url=redis_url, prefix=prefix, drain_timeout=1
    )
    lines: list[str] = []
    system = supervisor.System(config, out=lines.append)
    try:
        system.start()
        worker_pid = next(child.pid for child in system.children if child.name == "worker 1")
    finally:
        assert system.stop() == 0
    assert lines[-1].startswith(f"[2/3] worker 1: running, pid {worker_pid} (not listed in Redis")
    assert lines[-2].startswith("[3/3] edge: accepting connections on ")
