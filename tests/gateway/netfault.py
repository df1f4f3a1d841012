"""Real network faults between real processes: network namespaces joined through a forwarder
that can delay, drop and partition (tests/gateway/packet_forwarder.py).

``NetLab`` builds, per test, four namespaces named after a fresh tag::

    root ns: the test's HTTP client
       │ clean veth, never faulted
    edge ns ── link "edge" ──┐
                             ├── middle ns: the forwarder ══ redis ns: redis-server
    node ns ── link "node" ──┘

Each link is two veth pairs meeting in the middle namespace, where the forwarder copies every
frame (ARP included) from one to the other, so ``lab.faults("edge", partition=True)`` cuts the
edge off from Redis while the Nodes still reach it, and the kernels on both sides see silence,
not a reset. The edge namespace also has a veth straight to the root namespace, which the
forwarder never touches, so the test's own requests are never faulted.

Addresses are private and exist only inside the namespaces: link ``i`` is ``10.213.(10+i).0/24``
(the Redis end ``.1``, the client end ``.2``); the clean veth is a free ``10.213.N.0/30`` of the
root namespace. ``NetGateway`` starts redis-server, the edge (``distributed-asgi edge``, the real
command line) and Nodes (tests/gateway/runner.py, for the Node's own options) inside them.

Everything is torn down by ``close()`` (namespaces, their veths, every process in them), which
the fixtures call also after a failure; ``reap_stale()`` deletes what a run killed before its
finalizers left behind (the creating pid is in each namespace's name). ``unavailable()`` says
why this machine cannot run any of it (not root, no ``ip netns``), for a skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distributed_asgi.ops.redis_process import RedisProcess
from tests.gateway.cli_processes import CliProcesses
from tests.gateway.fixtures import FIDELITY_APP, ROOT, RUNNER

FORWARDER = Path(__file__).with_name("packet_forwarder.py")
LINKS = ("edge", "node")
ROLES = ("edge", "node", "redis", "middle")
EDGE_PORT = 8000
TAG_PREFIX = "nf"


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network fault tests need root (ip netns, veth pairs, AF_PACKET sockets)"
    if shutil.which("ip") is None:
        return "network fault tests need the ip command (iproute2)"
    probe = f"{TAG_PREFIX}probe{secrets.token_hex(3)}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"ip netns add failed: {added.stderr.strip() or added.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def reap_stale() -> list[str]:
    """Delete the namespaces (and kill the processes in them) that a lab of a run which no
    longer exists left behind, e.g. when pytest itself was killed; returns their names."""
    pattern = re.compile(rf"^({TAG_PREFIX}[0-9a-f]{{6}})-(?:{'|'.join(ROLES)})-(\d+)$")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    stale = []
    for line in listed.splitlines():
        name = line.split(" ", 1)[0]
        match = pattern.match(name)
        if match and not _alive(int(match.group(2))):
            _delete_namespace(name)
            for leftover in Path(tempfile.gettempdir()).glob(f"{match.group(1)}-*"):
                shutil.rmtree(leftover, ignore_errors=True)  # the control socket's directory
            stale.append(name)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _free_root_subnet() -> ipaddress.IPv4Network:
    """A 10.213.N.0/30 that no address or route of the root namespace overlaps."""
    shown = (
        subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
        + subprocess.run(
            ["ip", "-o", "-4", "route", "show"], capture_output=True, text=True, check=True
        ).stdout
    )
    taken = [
        ipaddress.ip_network(word, strict=False)
        for word in shown.split()
        if word[:1].isdigit() and word.count(".") == 3
    ]
    for third in secrets.SystemRandom().sample(range(100, 250), 150):
        candidate = ipaddress.IPv4Network(f"10.213.{third}.0/30")
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError("no free 10.213.N.0/30 subnet in the root namespace")


class NetLab:
    """The namespaces, veths and forwarder of one test. Use as a context manager."""

    def __init__(self) -> None:
        self.tag = TAG_PREFIX + secrets.token_hex(3)  # interface names stay under 15 bytes
        # The creating pid is in every name, so a later run can tell a leftover (see reap_stale).
        self.ns = {role: f"{self.tag}-{role}-{os.getpid()}" for role in ROLES}
        self.sockdir = tempfile.mkdtemp(prefix=f"{self.tag}-")
        self.control_path = os.path.join(self.sockdir, "forwarder.sock")
        self.forwarder: subprocess.Popen[bytes] | None = None
        self.forwarder_log = Path(self.sockdir, "forwarder.log")
        self._control: Any = None
        self._made: list[str] = []
        subnet = _free_root_subnet()
        root_end, edge_end = list(subnet.hosts())
        self.root_address, self.edge_address = str(root_end), str(edge_end)
        self._subnet = subnet

    # -- addresses -----------------------------------------------------------------------------

    def redis_address(self, link: str) -> str:
        """Where a process at the client end of ``link`` reaches Redis."""
        return f"10.213.{10 + LINKS.index(link)}.1"

    # -- building and tearing down -------------------------------------------------------------

    def __enter__(self) -> NetLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        for name in self.ns.values():
            ip("netns", "add", name)
            self._made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        # The middle namespace has no addresses: it must neither answer nor route anything.
        self.exec("middle", ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        pairs: dict[str, list[str]] = {}
        for index, link in enumerate(LINKS):
            client, server = f"{self.tag}{link[0]}c", f"{self.tag}{link[0]}s"
            mid_client, mid_server = f"{self.tag}{link[0]}mc", f"{self.tag}{link[0]}ms"
            self._veth(client, self.ns[link], mid_client, self.ns["middle"])
            self._veth(server, self.ns["redis"], mid_server, self.ns["middle"])
            self._address(self.ns[link], client, f"10.213.{10 + index}.2/24")
            self._address(self.ns["redis"], server, f"10.213.{10 + index}.1/24")
            for end in (mid_client, mid_server):
                ip("-n", self.ns["middle"], "link", "set", end, "up")
            pairs[link] = [mid_client, mid_server]
        root_end, edge_end = f"{self.tag}r", f"{self.tag}re"
        ip(
            "link",
            "add",
            root_end,
            "type",
            "veth",
            "peer",
            "name",
            edge_end,
            "netns",
            self.ns["edge"],
        )
        ip("addr", "add", f"{self.root_address}/{self._subnet.prefixlen}", "dev", root_end)
        ip("link", "set", root_end, "up")
        self._address(self.ns["edge"], edge_end, f"{self.edge_address}/{self._subnet.prefixlen}")
        self._start_forwarder(pairs)

    def _veth(self, name: str, ns: str, peer: str, peer_ns: str) -> None:
        ip("link", "add", name, "netns", ns, "type", "veth", "peer", "name", peer, "netns", peer_ns)

    def _address(self, ns: str, device: str, cidr: str) -> None:
        ip("-n", ns, "addr", "add", cidr, "dev", device)
        ip("-n", ns, "link", "set", device, "up")

    def _start_forwarder(self, pairs: dict[str, list[str]]) -> None:
        config = json.dumps({"control": self.control_path, "links": pairs})
        with open(self.forwarder_log, "wb") as log:
            self.forwarder = subprocess.Popen(
                ["ip", "netns", "exec", self.ns["middle"], sys.executable, str(FORWARDER), config],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while "ready" not in self.forwarder_log.read_text():
            if self.forwarder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the forwarder did not start: {self.forwarder_log.read_text()}")
            time.sleep(0.02)
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.connect(self.control_path)
        self._control = control.makefile("rwb")

    def close(self) -> None:
        """Kill what still runs in the namespaces, then delete them (their veths go with them)."""
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()
            self._control = None
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.kill()
            self.forwarder.wait()
        for name in reversed(self._made):
            _delete_namespace(name)
        self._made.clear()
        # The root end of the clean veth goes with its peer; this catches a half-built lab.
        subprocess.run(["ip", "link", "del", f"{self.tag}r"], capture_output=True)
        shutil.rmtree(self.sockdir, ignore_errors=True)

    # -- running things inside -----------------------------------------------------------------

    def command(self, role: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[role], *argv]

    def exec(self, role: str, argv: list[str]) -> str:
        done = subprocess.run(self.command(role, argv), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} in {self.ns[role]} failed: {done.stderr.strip()}")
        return done.stdout

    # -- faults --------------------------------------------------------------------------------

    def faults(
        self,
        link: str,
        *,
        delay: float | None = None,
        loss: float | None = None,
        partition: bool | None = None,
    ) -> None:
        """Set the faults of ``link`` (both ways); they apply to every frame after this returns."""
        request: dict[str, object] = {"link": link}
        for name, value in (("delay", delay), ("loss", loss), ("partition", partition)):
            if value is not None:
                request[name] = value
        self._ask(request)

    def heal(self, link: str) -> None:
        self.faults(link, delay=0.0, loss=0.0, partition=False)

    def stats(self) -> dict[str, dict[str, int]]:
        """Frames forwarded and dropped per link since the start."""
        stats: dict[str, dict[str, int]] = self._ask({"stats": True})["stats"]
        return stats

    def _ask(self, request: dict[str, object]) -> dict[str, Any]:
        self._control.write(json.dumps(request).encode() + b"\n")
        self._control.flush()
        answer: dict[str, Any] = json.loads(self._control.readline())
        if not answer.get("ok"):
            raise ValueError(f"forwarder refused {request}: {answer.get('error')}")
        return answer

    def rtt(self, link: str, port: int, count: int = 50) -> float:
        """Median seconds of a Redis PING from the client end of ``link``."""
        probe = (
            "import socket, statistics, sys, time\n"
            "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
            "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
            "times = []\n"
            "for _ in range(int(sys.argv[3])):\n"
            "    t = time.monotonic(); s.sendall(b'PING\\r\\n'); s.recv(64)\n"
            "    times.append(time.monotonic() - t)\n"
            "print(statistics.median(times))\n"
        )
        argv = [sys.executable, "-c", probe, self.redis_address(link), str(port), str(count)]
        return float(self.exec(link, argv))


class NamespacedRedis(RedisProcess):
    """redis-server inside the lab's Redis namespace, on every address there, and on a unix
    socket: unix sockets ignore network namespaces, so the test controls it (CONFIG, INFO)
    without crossing any faulted link."""

    def __init__(self, lab: NetLab, args: list[str] | None = None) -> None:
        super().__init__(args=args, unix_socket=True)
        self.lab = lab

    def command(self) -> list[str]:
        return self.lab.command("redis", [*super().command(), "--bind", "0.0.0.0"])

    def url_from(self, link: str) -> str:
        return f"redis://{self.lab.redis_address(link)}:{self.port}/0"

    def _answers_ping(self) -> bool:
        assert self.unix_socket_path is not None
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(self.unix_socket_path)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class NetGateway(CliProcesses):
    """Redis, one edge and Nodes in a ``NetLab``'s namespaces; ``stop()`` ends them all."""

    def __init__(self, lab: NetLab, workdir: Path, prefix: str) -> None:
        super().__init__(workdir)
        self.lab = lab
        self.prefix = prefix
        self.redis = NamespacedRedis(lab)
        self.nodes = 0

    def start_redis(self) -> NamespacedRedis:
        self.redis.start()
        return self.redis

    def start_in(self, role: str, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log(name), "wb") as handle:
            process = subprocess.Popen(
                self.lab.command(role, argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": ROOT, "MARKER_DIR": str(self.workdir)},
            )
        self.processes[name] = process
        return process

    def start_edge(self, *options: str) -> subprocess.Popen[bytes]:
        """``distributed-asgi edge`` in the edge namespace, with ``^/`` routed to "fidelity"."""
        argv = [
            sys.executable,
            "-m",
            "distributed_asgi",
            "edge",
            "--host",
            self.lab.edge_address,
            "--port",
            str(EDGE_PORT),
            "--route",
            "^/=fidelity",
            "--redis",
            self.redis.url_from("edge"),
            "--prefix",
            self.prefix,
            *options,
        ]
        process = self.start_in("edge", "edge", argv)
        self._wait_listening()
        return process

    def _wait_listening(self) -> None:
        def listening(_: str) -> bool:
            try:
                socket.create_connection((self.lab.edge_address, EDGE_PORT), timeout=0.2).close()
            except OSError:
                return False
            return True

        self.wait_for("edge", listening)

    def start_node(self, **options: Any) -> subprocess.Popen[bytes]:
        """A Node (tests/gateway/runner.py) in the node namespace serving the fidelity app;
        ``options`` are ``Node`` keyword arguments (``heartbeat_interval=0.5``...)."""
        config = {
            "url": self.redis.url_from("node"),
            "prefix": self.prefix,
            "app": FIDELITY_APP,
            "keys": ["fidelity"],
            "options": options,
        }
        name = f"node-{self.nodes}"
        self.nodes += 1
        process = self.start_in(
            "node", name, [sys.executable, str(RUNNER), "node", json.dumps(config)]
        )
        self.wait_for(name, lambda text: "Node listening" in text)
        return process

    def url(self, path: str = "/") -> str:
        return f"http://{self.lab.edge_address}:{EDGE_PORT}{path}"

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.text(name)}" for name in self.processes)

    def stop(self, name: str | None = None) -> None:
        if self.processes:
            super().stop(name)
        if name is None:
            self.redis.close()
