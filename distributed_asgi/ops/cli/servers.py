"""The ASGI servers ``distributed-asgi edge --server`` runs the distributor under.

uvicorn is a dependency; hypercorn, granian and daphne are optional extras, imported only when
chosen. Each runner serves until SIGINT/SIGTERM, shuts down gracefully and returns whether the
server started (the command exits 3 when it did not, as uvicorn does).

Lifespan: uvicorn, hypercorn and granian send it, and the Distributor closes its layer on
``lifespan.shutdown``. daphne has no lifespan support, so its runner closes the layer itself
when the reactor shuts down. Under hypercorn and daphne open WebSockets are closed at the
signal, as uvicorn closes them (closing.py).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import logging.config
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed_asgi.ops.cli.closing import ClosesWebSocketsOnShutdown
from distributed_asgi.ops.logs import numeric_level, uvicorn_log_config

if TYPE_CHECKING:
    from distributed_asgi.edge.distributor import Distributor

__all__ = [
    "SERVERS",
    "Listen",
    "ServerUnavailable",
    "log_config",
    "require",
    "serve",
]

# Each is also the package it needs and the extra that installs it.
SERVERS = ("uvicorn", "hypercorn", "granian", "daphne")
# The servers' own loggers, sent through the edge's one handler and format.
_SERVER_LOGGERS = ("hypercorn.error", "hypercorn.access", "_granian", "granian.access", "daphne")
_LOG = logging.getLogger("distributed_asgi.distributor")
_DAPHNE_FLUSH = 0.2  # seconds


class ServerUnavailable(Exception):
    """The chosen server cannot serve this configuration; the message says why."""


@dataclass(frozen=True)
class Listen:
    """Where and how the server listens: the edge command's server options."""

    host: str = "127.0.0.1"
    port: int = 8000
    root_path: str = ""
    access_log: bool = True
    log_level: str = "info"
    log_format: str = "text"
    loop: str = "auto"
    http: str = "auto"
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def tls(self) -> bool:
        return self.certfile is not None


def require(server: str, listen: Listen) -> None:
    """Fail before anything starts when ``server`` is missing or cannot take these options."""
    if server not in SERVERS:
        raise ServerUnavailable(f"unknown server {server!r}; choose one of {', '.join(SERVERS)}")
    if not _importable(server):
        raise ServerUnavailable(
            f"--server {server} needs the {server} package: "
            f"pip install 'distributed-asgi[{server}]'"
        )
    if server != "uvicorn" and listen.http != "auto":
        raise ServerUnavailable(f"--http is uvicorn's option; {server} chooses its own")
    if server == "daphne" and listen.loop == "uvloop":
        raise ServerUnavailable("--loop uvloop: daphne runs on Twisted's asyncio reactor only")
    if server != "uvicorn" and listen.loop == "uvloop" and not _importable("uvloop"):
        raise ServerUnavailable("--loop uvloop: uvloop is not installed")
    if (listen.certfile is None) != (listen.keyfile is None):
        raise ServerUnavailable("--ssl-certfile and --ssl-keyfile go together")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def log_config(listen: Listen) -> dict[str, Any]:
    """The edge's logging: its loggers and the server's through one handler, in one format."""
    config = uvicorn_log_config(listen.log_level, listen.log_format)
    level = numeric_level(listen.log_level)
    for name in _SERVER_LOGGERS:
        config["loggers"][name] = {"handlers": [], "level": level, "propagate": True}
    return config


def serve(
    server: str,
    listen: Listen,
    distributor: Distributor,
    rebuild: Callable[[], Distributor],
    *,
    workers: int = 1,
    factory: str | None = None,
) -> bool:
    """Serve ``distributor`` under ``server`` until a signal stops it; whether it started.

    granian runs the application in a worker process of its own, which builds its own
    distributor with ``rebuild`` (a picklable callable, for the ``spawn`` start method).
    uvicorn with ``workers`` > 1 runs its multi-process mode: each process imports
    ``factory`` ("module:function") and calls it for its own distributor.
    """
    if server == "uvicorn":
        return _uvicorn(listen, distributor, workers, factory)
    if server == "hypercorn":
        return _hypercorn(listen, distributor)
    if server == "granian":
        return _granian(listen, rebuild)
    return _daphne(listen, distributor)


# -- uvicorn ---------------------------------------------------------------------------------------


def _uvicorn(listen: Listen, distributor: Distributor, workers: int, factory: str | None) -> bool:
    import uvicorn

    config = uvicorn.Config(
        distributor if factory is None else factory,
        factory=factory is not None,
        workers=workers,
        host=listen.host,
        port=listen.port,
        loop=listen.loop,
        http=listen.http,
        root_path=listen.root_path,
        access_log=listen.access_log,
        log_level=listen.log_level,
        log_config=log_config(listen),
        ssl_certfile=listen.certfile,
        ssl_keyfile=listen.keyfile,
    )
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        # It binds the socket, starts the processes, replaces one that dies, and on SIGTERM
        # stops them all, each finishing its requests first.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return True
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
    # handler that was there before it: the edge command's clean exit.
    server.run()
    return server.started


# -- hypercorn -------------------------------------------------------------------------------------


def _hypercorn(listen: Listen, distributor: Distributor) -> bool:
    from hypercorn.config import Config

    config = Config()
    config.bind = [_host_port(listen.host, listen.port)]
    config.root_path = listen.root_path
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = logging.getLogger("hypercorn.access") if listen.access_log else None
    # In-flight requests may take the edge's own limits; hypercorn's default (3 s) is shorter.
    config.graceful_timeout = _graceful_timeout(distributor)
    if listen.tls:
        config.certfile = listen.certfile
        config.keyfile = listen.keyfile
    try:
        _run_loop(_hypercorn_main(distributor, config), listen.loop)
    except OSError as exc:  # the bind failed: nothing was served
        _LOG.error("hypercorn could not listen on %s: %s", config.bind[0], exc)
        return False
    return True


async def _hypercorn_main(distributor: Distributor, config: Any) -> None:
    from hypercorn.asyncio import serve

    app = ClosesWebSocketsOnShutdown(distributor)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        # hypercorn would wait for WebSockets as for requests: close them first, as uvicorn.
        await app.close_websockets()

    await serve(app, config, shutdown_trigger=shutdown_trigger, mode="asgi")  # type: ignore[arg-type]


def _graceful_timeout(distributor: Distributor) -> float:
    settings = distributor.settings
    return settings.total_timeout or settings.first_byte_timeout or 300.0


def _run_loop(main: Any, loop: str) -> None:
    from distributed_asgi.node.event_loop import loop_factory, run_in_new_loop

    run_in_new_loop(main, loop_factory(loop))


# -- granian ---------------------------------------------------------------------------------------


def _granian(listen: Listen, rebuild: Callable[[], Distributor]) -> bool:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    server = Server(
        target="distributed-asgi-edge",  # a label: the target comes from rebuild
        address=listen.host,
        port=listen.port,
        interface=Interfaces.ASGI,  # with lifespan
        workers=1,
        loop=Loops(listen.loop),
        log_level=_granian_level(listen.log_level),
        log_dictconfig=log_config(listen),
        log_access=listen.access_log,
        ssl_cert=Path(listen.certfile) if listen.certfile else None,
        ssl_key=Path(listen.keyfile) if listen.keyfile else None,
        url_path_prefix=listen.root_path or None,
    )
    try:
        server.serve(target_loader=functools.partial(_granian_app, rebuild), wrap_loader=False)
    except (OSError, RuntimeError) as exc:  # granian's bind errors are RuntimeErrors
        where = _host_port(listen.host, listen.port)
        _LOG.error("granian could not listen on %s: %s", where, str(exc).splitlines()[0])
        return False
    # granian's supervisor exits its serve loop when a worker dies, e.g. failing to start.
    return not server.interrupt_children


def _granian_app(rebuild: Callable[[], Distributor]) -> Distributor:
    return rebuild()


def _granian_level(level: str) -> Any:
    from granian.log import LogLevels

    # granian has no "trace"; it is debug there.
    return LogLevels("debug" if level == "trace" else level)


# -- daphne ----------------------------------------------------------------------------------------


def _daphne(listen: Listen, distributor: Distributor) -> bool:
    # daphne.server installs Twisted's asyncio reactor on import: import it before the reactor.
    from daphne.server import Server
    from twisted.internet import defer

    access: Any = None
    if listen.access_log:
        from daphne.access import AccessLogGenerator

        access = AccessLogGenerator(sys.stdout)

    app = ClosesWebSocketsOnShutdown(distributor)

    def later(coroutine: Any) -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(coroutine))

    class ClosingServer(Server):  # type: ignore[misc]
        def kill_all_applications(self) -> Any:
            # On shutdown, before daphne cancels its applications: WebSockets get 1012 (daphne
            # would drop them without a close frame). After: daphne sends no lifespan, so the
            # layer is closed here, before the reactor (and its asyncio loop) stops.
            kill = super().kill_all_applications
            shutdown = later(_close_and_flush(app))
            shutdown.addCallback(lambda _: kill())
            shutdown.addCallback(lambda _: later(distributor.aclose()))
            return shutdown

    server = ClosingServer(
        app,
        endpoints=[_daphne_endpoint(listen)],
        signal_handlers=True,
        action_logger=access,
        root_path=listen.root_path,
        verbosity=1,
    )
    server.run()
    return bool(server.listening_addresses)


async def _close_and_flush(app: ClosesWebSocketsOnShutdown) -> None:
    # daphne's WebSockets (autobahn) refuse to send any code but 1000 and 3000-4999: the client
    # gets 1000, the application still hears 1012.
    await app.close_websockets(client_code=1000)
    # Twisted drops every connection at shutdown, unwritten data too: let the close frames go.
    await asyncio.sleep(_DAPHNE_FLUSH)


def _daphne_endpoint(listen: Listen) -> str:
    # Twisted endpoint strings escape ':' (an IPv6 address) with a backslash.
    interface = listen.host.replace(":", r"\:")
    if listen.tls:
        return (
            f"ssl:port={listen.port}:interface={interface}"
            f":privateKey={listen.keyfile}:certKey={listen.certfile}"
        )
    return f"tcp:port={listen.port}:interface={interface}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
