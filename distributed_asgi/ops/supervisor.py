"""``distributed-asgi up``: Redis, workers and an edge on one machine, started and stopped as one.

Rules of this module:

- Every child runs in its own session, so a Ctrl-C at the terminal reaches only this process;
  it then stops the children in an order that loses no request: the edge first (no new
  connections; in-flight ones still have their workers), then the workers (each drains), then
  the private Redis server. A second Ctrl-C forwards a second signal, which makes every child
  exit at once.
- On Linux each child also gets ``PR_SET_PDEATHSIG``: if this process is killed outright, the
  kernel sends the children SIGTERM, so nothing outlives it (``processes.spawn``).
- Children are the ordinary commands (``python -m distributed_asgi worker|edge``), so what runs
  here is exactly what runs in production.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from distributed_asgi.ops.cli.options import ENCRYPTION_KEYS_ENV, ConfigError
from distributed_asgi.ops.processes import (
    Child,
    PrivateRedis,
    flush_prefix,
    masked,
    require_free_port,
    require_reachable,
    signal_child,
    spawn,
)
from distributed_asgi.ops.progress import StartupProgress, Step
from distributed_asgi.ops.redis_process import RedisProcess

__all__ = ["System", "UpConfig"]

# Time allowed, on top of the drain timeout, for a process to exit after SIGTERM.
EXIT_GRACE = 5.0
# How often the wait for a stop looks at the stop flags and the children (seconds).
STOP_POLL = 0.05
# After the edge is up, how long a worker may take to appear in Redis before it is reported as
# merely running (its app's lifespan startup may be slow; that is not a failure of `up`).
PRESENCE_WAIT = 10.0


@dataclass
class UpConfig:
    app: str
    routes: Sequence[tuple[str, str]] = (("/", "app"),)
    keys: Sequence[str] = ("app",)
    workers: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None  # None: start a private server
    prefix: str | None = None
    concurrency: int = 1000
    pickup_timeout: float = 5.0
    drain_timeout: float = 10.0
    factory: bool = False
    app_dir: str = "."
    log_level: str = "info"
    extra_env: dict[str, str] = field(default_factory=dict)
    encryption_keys: Sequence[str] = ()


class System:
    """One edge, ``workers`` workers and (without ``redis_url``) a private Redis server."""

    def __init__(
        self,
        config: UpConfig,
        *,
        out: Callable[[str], None] = print,
        python: str = sys.executable,
        styled: bool | None = None,
    ) -> None:
        self.config = config
        self.out = out
        # Start-up steps as they happen: coloured on a terminal (styled=None decides), plain
        # lines through ``out`` anywhere else.
        self.styled = styled
        self.python = python
        self.redis: RedisProcess | None = None
        self.redis_url = config.redis_url or ""
        self.prefix = config.prefix or ("asgi" if config.redis_url is None else _fresh_prefix())
        self.children: list[Child] = []
        self.failure: str | None = None
        # Plain flags, never a lock: the signal handler sets them, and it runs in the main thread
        # between any two bytecodes, which may be inside a lock's own critical section (a
        # threading.Event set from the handler deadlocks when the signal lands in Event.wait).
        self._signals = 0
        self._stop_asked = False
        self._force = False

    # -- what runs where --------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.config.port}"

    def worker_command(self) -> list[str]:
        cfg = self.config
        args = [self.python, "-m", "distributed_asgi", "worker", cfg.app]
        for key in cfg.keys:
            args += ["--key", key]
        args += ["--prefix", self.prefix]  # the server: REDIS_URL in the environment
        args += ["--concurrency", str(cfg.concurrency), "--drain-timeout", str(cfg.drain_timeout)]
        args += ["--app-dir", os.path.abspath(cfg.app_dir), "--log-level", cfg.log_level]
        return [*args, "--factory"] if cfg.factory else args

    def edge_command(self) -> list[str]:
        cfg = self.config
        args = [self.python, "-m", "distributed_asgi", "edge"]
        for regex, key in cfg.routes:
            args += ["--route", f"{regex}={key}"]
        args += ["--host", cfg.host, "--port", str(cfg.port)]
        args += ["--prefix", self.prefix]  # the server: REDIS_URL in the environment
        args += ["--pickup-timeout", str(cfg.pickup_timeout), "--log-level", cfg.log_level]
        return args

    # -- life cycle ---------------------------------------------------------------------------

    def serve(self, on_ready: Callable[[System], None] | None = None) -> int:
        """Start, print the summary, run until Ctrl-C/SIGTERM or a child dies, stop; exit code.

        ``on_ready(system)`` runs once everything is up (the demo's self-check); an exception
        from it counts as a failure and stops the system.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            try:
                self.start()
            except ConfigError as exc:
                self.failure = str(exc)
            else:
                if not self.stopping:  # not stopped while starting
                    self.out(self.summary())
                if on_ready is not None and not self.stopping:
                    try:
                        on_ready(self)
                    except Exception as exc:
                        self.failure = f"{type(exc).__name__}: {exc}"
                if self.failure is None:
                    self.wait()
        finally:
            private = self.redis is not None
            started = len(self.children)
            code = self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.failure:
            self.out(f"Error: {self.failure}")
        elif code == 0:
            cleaned = "the private Redis server" if private else f"the keys under '{self.prefix}:'"
            self.out(f"Stopped {started} process(es) and {cleaned}: nothing left behind.")
        return code

    def start(self, timeout: float = 30.0) -> None:
        """Start everything; return once the edge accepts connections and the workers listen.
        ConfigError on failure.

        Each part is reported when it starts and when it is ready (``[i/N] part: ...``): the
        Redis server, then every worker and the edge, which start at the same time.
        """
        cfg = self.config
        progress = StartupProgress(cfg.workers + 2, self.out, styled=self.styled)
        require_free_port(cfg.host, cfg.port)
        if cfg.redis_url is None:
            with progress.step("redis", "starting a private server") as step:
                self.redis = PrivateRedis().start()
                self.redis_url = self.redis.url
                pid = self.redis.process.pid if self.redis.process else "?"
                step.done(f"private server ready at {self.redis_url}, pid {pid}")
        else:
            with progress.step("redis", f"connecting to {masked(self.redis_url)}") as step:
                require_reachable(self.redis_url)
                step.done(f"reachable; keys go under '{self.prefix}:'")
        # Apps that use the channel layer themselves (Django Channels) find the same server.
        # Secrets (a password in the URL, encryption keys) reach the children through the
        # environment only: a command line is visible to every user of the machine.
        env = {**os.environ, "REDIS_URL": self.redis_url, **cfg.extra_env}
        if cfg.encryption_keys:
            env[ENCRYPTION_KEYS_ENV] = " ".join(cfg.encryption_keys)
        # Every part starts at once; each is reported when it is ready, in whatever order.
        workers: dict[int, Step] = {}
        for number in range(1, cfg.workers + 1):
            child = self._spawn(f"worker {number}", self.worker_command(), env)
            workers[child.pid] = progress.begin(
                f"worker {number}", f"starting {cfg.app}, pid {child.pid}"
            )
        edge = self._spawn("edge", self.edge_command(), env)
        edge_step = progress.begin("edge", f"starting on {self.url}, pid {edge.pid}")
        steps = [*workers.values(), edge_step]
        try:
            self._wait_until_ready(workers, edge_step, timeout)
        except BaseException:
            for step in steps:
                if not step.finished:
                    step.failed()
            raise
        for step in steps:
            if not step.finished:  # only when a stop was asked for meanwhile
                step.failed("stopped while starting")

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        child = Child(name, spawn(args, env))
        self.children.append(child)
        return child

    def _wait_until_ready(self, workers: dict[int, Step], edge: Step, timeout: float) -> None:
        """Report each worker when it listens and the edge when it accepts connections.

        A worker is listening once its presence key (what ``distributed-asgi status`` lists)
        names its pid. One that runs but is not listed by the time the edge is up plus
        ``PRESENCE_WAIT`` (say, an ACL user that may not write it) is reported as running: it
        is not a reason to refuse to start. The edge not accepting in ``timeout`` is.
        """
        host = self.url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
        keys = ", ".join(self.config.keys)
        deadline = time.monotonic() + timeout
        presence_deadline = deadline
        waiting = dict(workers)
        while waiting or not edge.finished:
            self._check_children()
            if self.failure:
                raise ConfigError(self.failure)
            if self.stopping:
                return
            now = time.monotonic()
            if waiting:
                for pid in self._listening_pids() & set(waiting):
                    waiting.pop(pid).done(f"listening on {keys}, pid {pid}")
                if now > presence_deadline:
                    for pid, step in waiting.items():
                        step.done(f"running, pid {pid} (not listed in Redis yet)")
                    waiting.clear()
            if not edge.finished:
                if now > deadline:
                    raise ConfigError(
                        f"the edge did not accept connections on {self.url} in {timeout:.0f}s"
                    )
                try:
                    with socket.create_connection((host, self.config.port), timeout=0.5):
                        pass
                except OSError:
                    pass
                else:
                    pid = next(c.pid for c in self.children if c.name == "edge")
                    edge.done(f"accepting connections on {self.url}, pid {pid}")
                    presence_deadline = min(deadline, now + PRESENCE_WAIT)
            time.sleep(0.05)

    def _listening_pids(self) -> set[int]:
        """Pids of this machine's Nodes with a presence key under our prefix (best effort)."""
        from distributed_asgi.layers import RedisChannelLayer
        from distributed_asgi.ops.status import collect

        async def read() -> set[int]:
            layer = RedisChannelLayer(hosts=[self.redis_url], prefix=self.prefix)
            try:
                snapshot = await collect(layer)
            finally:
                await layer.close()
            host = socket.gethostname()
            return {
                int(node["pid"])
                for node in snapshot["nodes"]
                if node.get("host") == host and isinstance(node.get("pid"), int)
            }

        try:
            return asyncio.run(read())
        except Exception:  # Redis busy or restarting: ask again at the next turn
            return set()

    @property
    def stopping(self) -> bool:
        """A stop was asked for, by a signal or by ``request_stop()``."""
        return self._stop_asked or self._signals > 0

    def wait(self) -> None:
        """Block until a stop signal or until a child exits by itself."""
        while not self.stopping:
            self._check_children()
            if self.failure:
                return
            time.sleep(STOP_POLL)

    def _check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None and self.failure is None:
                self.failure = (
                    f"{child.name} (pid {child.pid}) exited with code {code}; its output is above"
                )

    def request_stop(self) -> None:
        self._stop_asked = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:  # asked to stop already: the children exit at once
            self._force = True
            for child in self.children:
                signal_child(child, signal.SIGTERM)
        self._signals += 1

    def stop(self) -> int:
        """Stop edge, then workers, then Redis. 0 when all exited cleanly and nothing failed."""
        clean = self.failure is None
        edges = [c for c in self.children if c.name == "edge"]
        workers = [c for c in self.children if c.name != "edge"]
        for group in (edges, workers):
            clean &= self._terminate(group, self.config.drain_timeout + EXIT_GRACE)
        self.children.clear()
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        elif self.redis_url:
            try:
                flush_prefix(self.redis_url, self.prefix)
            except Exception as exc:  # the server may be gone; nothing else to clean then
                self.out(f"could not delete keys under '{self.prefix}:': {exc}")
                clean = False
        return 0 if clean else 1

    def _terminate(self, children: list[Child], timeout: float) -> bool:
        # A child that exited before we asked is already in self.failure; say nothing twice.
        already_gone = {child.pid for child in children if child.process.poll() is not None}
        for child in children:
            signal_child(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        clean = True
        for child in children:
            while child.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                if self._force:
                    deadline = min(deadline, time.monotonic() + 2.0)
            if child.process.poll() is None:
                self.out(f"{child.name} (pid {child.pid}) did not stop in {timeout:.0f}s: killed")
                child.process.kill()
            code = child.process.wait()
            # A child we signalled exits 0, or dies of that very signal when it came before the
            # child's own handlers were in place (during interpreter start-up).
            if code not in (0, -signal.SIGTERM) or child.pid in already_gone:
                if child.pid not in already_gone:
                    self.out(f"{child.name} (pid {child.pid}) exited with code {code}")
                clean = False
        return clean

    def summary(self) -> str:
        cfg = self.config
        workers = [c for c in self.children if c.name != "edge"]
        edge = next(c for c in self.children if c.name == "edge")
        if self.redis is not None:
            redis = f"{self.redis_url}  (private server, pid {self.redis.process.pid})"  # type: ignore[union-attr]
        else:
            redis = f"{masked(self.redis_url)}  (keys under '{self.prefix}:' deleted on exit)"
        routes = ", ".join(f"{regex} -> {key}" for regex, key in cfg.routes)
        pids = ", ".join(str(c.pid) for c in workers)
        extra = (
            f"distributed-asgi worker {cfg.app} "
            + " ".join(f"--key {k}" for k in cfg.keys)
            + f" --redis {masked(self.redis_url)} --prefix {self.prefix}"
            + ("" if cfg.app_dir == "." else f" --app-dir {os.path.abspath(cfg.app_dir)}")
            # The keys themselves are secret: say where they must be, never what they are.
            + (f"  (with the same ${ENCRYPTION_KEYS_ENV})" if cfg.encryption_keys else "")
        )
        return "\n".join(
            [
                "distributed-asgi up",
                f"  redis    {redis}",
                f"  workers  {len(workers)} x {cfg.app}, keys {', '.join(cfg.keys)}  (pids {pids})",
                f"  edge     {self.url}  (pid {edge.pid})",
                f"  routes   {routes}",
                f"  another worker:  {extra}",
                f"Open {self.url} -- Ctrl-C stops everything.",
            ]
        )


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _fresh_prefix() -> str:
    return "up-" + secrets.token_hex(4)
