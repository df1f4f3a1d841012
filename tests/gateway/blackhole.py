"""A TCP proxy that can stop moving bytes while keeping every socket open: a network partition
as the processes behind it see it, without root or network namespaces.

``BlackholeProxy(port)`` listens on a free loopback port and forwards each connection to
``127.0.0.1:port``. ``partition()`` stops forwarding in both directions (nothing is refused,
reset or closed: writes land in kernel buffers and reads wait, as when packets are silently
dropped), and connections accepted meanwhile are held without reaching the server. ``heal()``
lets everything held flow again, in order, as TCP retransmission would deliver it.

A thread per direction per connection: the tests open a handful of connections, and blocking
sockets keep the proxy independent of the event loops under test.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

__all__ = ["BlackholeProxy"]

_CHUNK = 65536


class BlackholeProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def partition(self) -> None:
        """From now on no byte moves either way, and new connections reach nobody."""
        self._flowing.clear()

    def heal(self) -> None:
        """Let every held byte and connection through, and forward as usual again."""
        self._flowing.set()

    @contextlib.contextmanager
    def partitioned(self) -> Iterator[None]:
        self.partition()
        try:
            yield
        finally:
            self.heal()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()  # release the pumps so they see the closed sockets and end
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> BlackholeProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        # A connection made during a partition waits here: its SYN "has not arrived yet".
        self._flowing.wait()
        if self._closed:
            return
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        self._track(upstream)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                # Bytes read during a partition are held until it heals (so is an EOF), the
                # way a dropped segment is delivered by a later retransmission.
                self._flowing.wait()
                if self._closed:
                    return
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
        except OSError:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
