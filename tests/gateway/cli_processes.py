"""Edge and worker processes started through the real command line, for the observability tests.

``CliProcesses.start(name, [args...])`` runs ``python -m distributed_asgi ARGS`` with its output
in ``name.log``; ``stop()`` SIGTERMs what still runs (and kills what does not stop), so no test
leaves a process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.gateway.fixtures import ROOT
from tests.support import stop_processes, wait_until_listening


class CliProcesses:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.log(name), "wb") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "distributed_asgi", *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={
                    **os.environ,
                    "PYTHONPATH": ROOT,
                    "MARKER_DIR": str(self.workdir),
                    **(env or {}),
                },
            )
        self.processes[name] = process
        return process

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def text(self, name: str) -> str:
        return self.log(name).read_text(errors="replace")

    def wait_for(self, name: str, what: Callable[[str], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what(self.text(name)):
                return
            if self.processes[name].poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.text(name)}")
            time.sleep(0.05)
        raise AssertionError(f"{name}: not there in {timeout}s:\n{self.text(name)}")

    def wait_for_port(self, name: str, port: int, timeout: float = 20) -> None:
        wait_until_listening(
            port,
            timeout=timeout,
            processes=[self.processes[name]],
            describe=lambda: self.text(name),
        )

    def stop(self, name: str | None = None) -> None:
        names = [name] if name is not None else list(self.processes)
        stop_processes([self.processes[each] for each in names])
