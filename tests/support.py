"""What the subprocess tests share: wait until a port accepts, stop a set of processes.

- ``wait_until_listening(port, ...)``: polls a TCP connect until one succeeds; fails at once
  when one of ``processes`` exits first (with ``describe()``'s text, e.g. the process's log).
- ``stop_processes(processes, ...)``: SIGTERM to all, then waits; whatever is still running
  at the deadline gets SIGKILL. Returns the ones killed, so a test can tell a clean stop.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Process = subprocess.Popen[Any]


def wait_until_listening(
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout: float = 20.0,
    processes: Iterable[Process] = (),
    describe: Callable[[], str] = lambda: "",
) -> None:
    watched = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        for process in watched:
            if process.poll() is not None:
                raise AssertionError(
                    f"{process.args!r} exited with {process.returncode} before {host}:{port} "
                    f"accepted connections\n{describe()}"
                )
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nothing accepted connections on {host}:{port} within {timeout}s\n{describe()}"
                ) from None
            time.sleep(0.05)


def stop_processes(processes: Sequence[Process], timeout: float = 10.0) -> list[Process]:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed.append(process)
    return killed


class WrappedLayer:
    """A real layer behind the gateway's layer API, for tests that change one call of it
    (subclasses override that call and ``await super()...`` for the real one)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self.layer.send(channel, message)

    async def push(self, channel: str, message: dict[str, Any]) -> None:
        await self.layer.push(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.layer.receive(channel)
        return result

    async def new_channel(self, prefix: str = "specific") -> str:
        name: str = await self.layer.new_channel(prefix)
        return name

    async def close(self) -> None:
        await self.layer.close()
