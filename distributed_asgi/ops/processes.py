"""The processes of ``distributed-asgi up``: children started out of the terminal's reach, the
private Redis server, and the checks and clean-up done against the server before and after.

- Every child runs in its own session, so a Ctrl-C at the terminal reaches only the supervisor,
  which stops the children in its own order.
- On Linux each child also gets ``PR_SET_PDEATHSIG``: if the supervisor is killed outright, the
  kernel sends the children SIGTERM, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distributed_asgi.ops.cli.options import ConfigError
from distributed_asgi.ops.redis_process import RedisProcess

__all__ = [
    "Child",
    "PrivateRedis",
    "flush_prefix",
    "masked",
    "require_free_port",
    "require_reachable",
    "signal_child",
    "spawn",
]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


def set_parent_death_signal() -> None:  # pragma: no cover - runs in the child before exec
    """Its own session (out of the terminal's reach); SIGTERM when the parent dies (Linux)."""
    os.setsid()
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn(args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own session that dies with this process; output is shared."""
    return subprocess.Popen(
        list(args),
        env=env,
        # preexec_fn is not safe with threads running; the supervisor starts children only from
        # the main thread, before any thread of its own exists.
        preexec_fn=set_parent_death_signal if os.name == "posix" else None,
    )


class PrivateRedis(RedisProcess):
    """A RedisProcess whose server is out of the terminal's reach (see the module rules)."""

    def start(self, timeout: float = 10.0) -> RedisProcess:
        if self.running:
            return self
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=set_parent_death_signal if os.name == "posix" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"redis server exited at start-up; log: {self.log_tail()}")
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"redis server did not answer on port {self.port} in {timeout}s")


def signal_child(child: Child, signum: int) -> None:
    """Send ``signum`` to a child still running; one that has exited is left alone."""
    if child.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # exited between poll() and now
            child.process.send_signal(signum)


def masked(url: str) -> str:
    from distributed_asgi.layers.hosts import mask_secret

    return mask_secret(url)


def require_free_port(host: str, port: int) -> None:
    """Fail before starting anything, rather than find some other server on the edge's port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror}") from None


def require_reachable(url: str) -> None:
    """Fail before starting anything when the shared server does not answer a PING."""
    import redis

    client: Any = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(f"cannot reach Redis at {masked(url)}: {exc}") from None
    finally:
        client.close()


def flush_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``: what ``up`` leaves on a shared server on exit."""
    from distributed_asgi.layers import RedisChannelLayer

    async def flush() -> None:
        layer = RedisChannelLayer(hosts=[url], prefix=prefix)
        try:
            await layer.flush()
        finally:
            await layer.close()

    asyncio.run(flush())
