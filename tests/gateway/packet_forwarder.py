"""An Ethernet forwarder with faults: ``python packet_forwarder.py CONFIG`` (run as root in the
network namespace that holds the interfaces, see tests/gateway/netfault.py).

CONFIG is JSON: ``{"control": "/path/to.sock", "links": {"NAME": ["if-a", "if-b"], ...}}``.
Every frame arriving on one interface of a link (ARP and IPv6 included) leaves on the other,
unless the link's faults say otherwise:

- ``delay``: seconds each frame is held before it leaves (each way, so the round trip grows
  by twice this); frames keep their order.
- ``loss``: the fraction of frames dropped at random, each way.
- ``partition``: every frame dropped, also those being delayed. The links stay up, so the
  hosts on both sides see silence (retransmissions, timeouts), never a reset.

Control: connect to the unix socket, send one JSON object per line, read one JSON line back.
``{"link": NAME, "delay": 0.002, "loss": 0.05, "partition": false}`` sets the given faults
(the others keep their values) and answers ``{"ok": true}`` once they apply to every later
frame. ``{"stats": true}`` answers ``{"ok": true, "stats": {NAME: {"forwarded": n,
"dropped": n}}}``. The forwarder writes ``ready`` on stdout once it listens.

Frames are read with a virtio-net header (PACKET_VNET_HDR) and written with the same header, so
segmentation and checksum offloads pass through untouched: the forwarder never has to split
segments or compute checksums, and the kernel treats a forwarded frame as it would any other.

Only the standard library: this runs as a separate process under ``ip netns exec``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4  # the kernel's own copy of a frame sent on this interface
FRAME_MAX = 65536 + 64  # a GSO frame plus the virtio-net header


@dataclass
class Direction:
    """One way of a link: frames read from ``source`` leave on ``target``."""

    source: socket.socket
    target: socket.socket
    held: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)


@dataclass
class Link:
    name: str
    directions: list[Direction]
    delay: float = 0.0
    loss: float = 0.0
    partition: bool = False
    forwarded: int = 0
    dropped: int = 0

    def configure(self, request: dict[str, object]) -> None:
        if "delay" in request:
            self.delay = _fraction_or_seconds("delay", request["delay"], upper=None)
        if "loss" in request:
            self.loss = _fraction_or_seconds("loss", request["loss"], upper=1.0)
        if "partition" in request:
            self.partition = bool(request["partition"])
        if self.partition:
            for direction in self.directions:
                self.dropped += len(direction.held)
                direction.held.clear()


def _fraction_or_seconds(name: str, value: object, upper: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be at most {upper}, got {value!r}")
    return float(value)


def open_interface(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    # Bursts (a pipeline of replies) must wait in the kernel, not be dropped before we read.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((name, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class Forwarder:
    def __init__(self, config: dict[str, object]) -> None:
        self.selector = selectors.DefaultSelector()
        self.links: dict[str, Link] = {}
        links = config["links"]
        assert isinstance(links, dict)
        for name, (first, second) in links.items():
            a, b = open_interface(first), open_interface(second)
            link = Link(name, [Direction(a, b), Direction(b, a)])
            self.links[name] = link
            for direction in link.directions:
                self.selector.register(direction.source, selectors.EVENT_READ, (link, direction))
        path = str(config["control"])
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(path)
        self.control.listen(8)
        self.control.setblocking(False)
        self.selector.register(self.control, selectors.EVENT_READ, None)
        self.buffers: dict[socket.socket, bytes] = {}

    def run(self) -> None:
        print("ready", flush=True)
        while True:
            for key, _ in self.selector.select(self._timeout()):
                if key.data is None:
                    self._accept()
                elif isinstance(key.data, tuple):
                    self._read(*key.data)
                else:
                    self._control(key.fileobj)  # type: ignore[arg-type]
            self._release(time.monotonic())

    def _timeout(self) -> float | None:
        due = [d.held[0][0] for link in self.links.values() for d in link.directions if d.held]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _read(self, link: Link, direction: Direction) -> None:
        while True:
            try:
                frame, address = direction.source.recvfrom(FRAME_MAX)
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            if link.partition or (link.loss and random.random() < link.loss):
                link.dropped += 1
            elif link.delay:
                direction.held.append((time.monotonic() + link.delay, frame))
            else:
                self._send(link, direction, frame)

    def _release(self, now: float) -> None:
        for link in self.links.values():
            for direction in link.directions:
                while direction.held and direction.held[0][0] <= now:
                    self._send(link, direction, direction.held.popleft()[1])

    def _send(self, link: Link, direction: Direction, frame: bytes) -> None:
        try:
            direction.target.send(frame)
            link.forwarded += 1
        except OSError:  # the interface's queue is full: a dropped frame, as on a real wire
            link.dropped += 1

    def _accept(self) -> None:
        client, _ = self.control.accept()
        client.setblocking(False)
        self.buffers[client] = b""
        self.selector.register(client, selectors.EVENT_READ, "control")

    def _control(self, client: socket.socket) -> None:
        try:
            data = client.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(client)
            del self.buffers[client]
            client.close()
            return
        self.buffers[client] += data
        while b"\n" in self.buffers[client]:
            line, _, self.buffers[client] = self.buffers[client].partition(b"\n")
            client.setblocking(True)
            client.sendall(json.dumps(self._answer(json.loads(line))).encode() + b"\n")
            client.setblocking(False)

    def _answer(self, request: dict[str, object]) -> dict[str, object]:
        try:
            if request.get("stats"):
                stats = {
                    name: {"forwarded": link.forwarded, "dropped": link.dropped}
                    for name, link in self.links.items()
                }
                return {"ok": True, "stats": stats}
            name = request.get("link")
            if name not in self.links:
                raise ValueError(f"no link named {name!r}; links: {sorted(self.links)}")
            self.links[str(name)].configure(request)
            return {"ok": True}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}


if __name__ == "__main__":
    Forwarder(json.loads(sys.argv[1])).run()
    os._exit(0)
