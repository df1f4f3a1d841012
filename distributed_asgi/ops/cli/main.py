"""``distributed-asgi``: run the edge, a worker, or the whole system on one machine.

Conventions are uvicorn's: apps are ``module:attribute`` import strings, ``--app-dir`` is put on
``sys.path``, and bad configuration stops the command at start-up with ``Error: ...`` naming the
bad value (exit code 2 for usage errors, 1 for the rest), before any server starts.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from distributed_asgi.ops.cli.options import (
    ENCRYPTION_KEYS_ENV,
    ConfigError,
    check_encryption_keys,
    check_key,
    check_redis_url,
    check_redis_urls,
    check_routes,
    literal_keys,
    load_app,
    load_routes_file,
    parse_route,
    redis_url_or_default,
)

if TYPE_CHECKING:  # the layers import redis-py: not needed for --help
    from distributed_asgi.layers import GatewayLayer

__all__ = ["main"]

LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]
# uvicorn exits with 3 when its start-up fails; the worker uses the same code.
STARTUP_FAILURE = 3

_redis_option = click.option(
    "--redis",
    "redis_urls",
    multiple=True,
    metavar="URL",
    help="Redis URL (redis://, rediss://, unix://, or redis+cluster://h1:p1,h2:p2 for a Redis "
    "Cluster). Repeatable: several servers share the channels by consistent hashing; every "
    "edge and worker must list the same ones. Default: $REDIS_URL, else redis://localhost:6379/0.",
)
_local_redis_option = click.option(
    "--local-redis",
    "local_redis_url",
    metavar="URL",
    help="A Redis on this machine (a unix:// socket is best) for the route channels, so "
    "requests never leave the machine; --redis then carries only replies "
    "(RedisLocalChannelLayer). Every edge using it needs workers for its routes on the same "
    "machine.",
)
_prefix_option = click.option(
    "--prefix",
    default="asgi",
    show_default=True,
    help="Key prefix of the channel layer; the edge and its workers must agree on it.",
)
_encryption_option = click.option(
    "--encryption-key",
    "encryption_keys",
    multiple=True,
    metavar="KEY",
    envvar=ENCRYPTION_KEYS_ENV,
    show_envvar=True,
    help="Encrypt and authenticate every message with this key (32+ characters); the edge and "
    "its workers need the same. Repeatable for rotation: the first encrypts, any decrypts. "
    "Prefer the environment variable (keys separated by spaces): a command line is visible to "
    "every user of the machine.",
)
_log_level_option = click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
    help="Log level.",
)
_log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object per line (time, level, logger, message and "
    "the event's fields) for a log collector.",
)
_metrics_port_option = click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics on this port (/metrics). Default: no metrics.",
)
_metrics_host_option = click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port binds to; 0.0.0.0 for a Prometheus on another machine.",
)
_app_dir_option = click.option(
    "--app-dir",
    default=".",
    show_default=True,
    help="Look for APP in this directory, by adding it to the PYTHONPATH.",
)
# Options that mean the same on several commands, declared once.
_factory_option = click.option(
    "--factory", is_flag=True, help="APP is a factory: call it with no arguments to get the app."
)
_pickup_timeout_option = click.option(
    "--pickup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds the edge waits for a worker to take a connection before answering 503.",
)
_concurrency_option = click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Per worker: most connections served at once; beyond it work stays in Redis for "
    "other workers.",
)
_route_options = [
    click.option(
        "--route",
        "route_values",
        multiple=True,
        metavar="REGEX=KEY",
        help="A route: requests whose path matches REGEX (re.search) go to channel KEY, which "
        r"may use the match's groups (\1, \g<name>). Repeatable; tried in order, before "
        "--routes.",
    ),
    click.option(
        "--routes",
        "routes_file",
        metavar="FILE",
        help="A JSON or TOML file mapping REGEX to KEY, tried in file order.",
    ),
]


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def gather_routes(route_values: Sequence[str], routes_file: str | None) -> list[tuple[str, str]]:
    """The route table from ``--route`` options then ``--routes FILE``, checked."""
    try:
        routes = [parse_route(value) for value in route_values]
        if routes_file:
            routes += load_routes_file(routes_file)
        check_routes(routes)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return routes


def _checked_redis_url(url: str | None) -> str:
    try:
        return check_redis_url(redis_url_or_default(url))
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _checked_redis_urls(urls: Sequence[str]) -> list[str]:
    """Every ``--redis``, else ``$REDIS_URL``, else the default; checked alone and together."""
    try:
        return check_redis_urls(list(urls) or [redis_url_or_default(None)])
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _checked_encryption_keys(keys: Sequence[str]) -> list[str]:
    try:
        return check_encryption_keys(keys)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _make_layer(
    redis_urls: Sequence[str],
    prefix: str,
    encryption_keys: Sequence[str],
    local_redis_url: str | None = None,
    backlog: int | None = None,
) -> GatewayLayer:
    """The layer of a gateway process; route channels hold up to ``backlog`` connects (the
    distributor's default when None), so edges, workers handing connects back and ``status``
    agree on it."""
    from distributed_asgi.edge.distributor import DEFAULT_BACKLOG, with_backlog
    from distributed_asgi.layers import RedisChannelLayer, RedisLocalChannelLayer

    keys = _checked_encryption_keys(encryption_keys)
    capacities = with_backlog(DEFAULT_BACKLOG if backlog is None else backlog)
    try:
        if local_redis_url is not None:
            local = check_redis_url(local_redis_url)
            if local in redis_urls:
                # The same server as local and central would hold every key twice over under
                # one prefix: a mistake, not a deployment.
                raise ConfigError(f"{local!r} is also a --redis server")
            return RedisLocalChannelLayer(
                hosts=list(redis_urls),
                local_hosts=[local],
                prefix=prefix,
                channel_capacity=capacities,
                symmetric_encryption_keys=keys or None,
            )
        return RedisChannelLayer(
            hosts=list(redis_urls),
            prefix=prefix,
            channel_capacity=capacities,
            symmetric_encryption_keys=keys or None,
        )
    except ConfigError as exc:
        raise _fail(f"invalid --local-redis: {exc}") from None
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _start_metrics(port: int | None, host: str) -> None:
    """Serve /metrics before the server starts, so a taken port fails the start-up."""
    if port is None:
        return
    from distributed_asgi.ops.metrics import serve_metrics

    try:
        serve_metrics(port, host)
    except OSError as exc:
        raise _fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None


def _log_startup(component: str, what: str, config: dict[str, Any]) -> None:
    """One line with the effective configuration; secrets are masked or counted, never shown."""
    text = " ".join(f"{name}={value}" for name, value in config.items())
    logging.getLogger(component).info("%s starting: %s", what, text, extra={"config": config})


def _masked_urls(urls: Sequence[str]) -> list[str]:
    from distributed_asgi.layers.hosts import mask_secret

    return [mask_secret(url) for url in urls]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distributed-asgi")
def main() -> None:
    """Serve ASGI apps from workers anywhere that share a Redis server.

    An edge (an ASGI server running the distributor) takes HTTP and WebSocket connections and
    hands each one, through Redis, to whichever worker listening on the route's key picks it up.
    """


@main.command()
@_route_options[0]
@_route_options[1]
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind to this address.")
@click.option("--port", type=int, default=8000, show_default=True, help="Bind to this port.")
@_redis_option
@_local_redis_option
@_prefix_option
@_encryption_option
@_pickup_timeout_option
@click.option(
    "--first-byte-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="HTTP: seconds from a request's arrival to its response's start, else 504; 0: none.",
)
@click.option(
    "--total-timeout",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="HTTP: seconds for a whole response, else 504 (or a closed connection); 0: none.",
)
@click.option(
    "--no-worker-status",
    type=int,
    default=503,
    show_default=True,
    help="Status answered when no worker takes a connection in time (the seed used 405).",
)
@click.option(
    "--max-body-size",
    type=click.IntRange(min=0),
    default=None,
    metavar="BYTES",
    help="Largest request body forwarded; bigger ones get 413. Default: the distributor's.",
)
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="Connections that may wait in one route channel for a worker; beyond it the edge "
    "answers 503 at once.",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
    help="Event loop (uvicorn's option).",
)
@click.option(
    "--http",
    type=click.Choice(["auto", "h11", "httptools"]),
    default="auto",
    show_default=True,
    help="HTTP implementation (uvicorn's option).",
)
@click.option("--root-path", default="", help="ASGI root_path, when mounted below a prefix.")
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True, help="Log every request."
)
@_log_level_option
@_log_format_option
@_metrics_port_option
@_metrics_host_option
def edge(
    route_values: tuple[str, ...],
    routes_file: str | None,
    host: str,
    port: int,
    redis_urls: tuple[str, ...],
    local_redis_url: str | None,
    prefix: str,
    encryption_keys: tuple[str, ...],
    pickup_timeout: float,
    first_byte_timeout: float,
    total_timeout: float,
    no_worker_status: int,
    max_body_size: int | None,
    backlog: int,
    loop: str,
    http: str,
    root_path: str,
    access_log: bool,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the edge: uvicorn serving the distributor on HOST:PORT.

    \b
    Example:
      distributed-asgi edge --route '/api/([a-z-]+)=api-\\1' --route '/=site'
    """
    routes = gather_routes(route_values, routes_file)
    urls = _checked_redis_urls(redis_urls)
    layer = _make_layer(urls, prefix, encryption_keys, local_redis_url, backlog)
    _exit_cleanly_on_signals()

    import uvicorn

    from distributed_asgi.edge.distributor import Distributor

    options: dict[str, Any] = {
        "pickup_timeout": pickup_timeout,
        "first_byte_timeout": first_byte_timeout or None,
        "total_timeout": total_timeout or None,
    }
    options["no_worker_status"] = no_worker_status
    if max_body_size is not None:
        options["max_body_size"] = max_body_size
    if metrics_port is not None:
        from distributed_asgi.ops.metrics import edge_metrics

        options["metrics"] = edge_metrics()
    try:
        distributor = Distributor(layer, routes, **options)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    _start_metrics(metrics_port, metrics_host)
    from distributed_asgi.ops.logs import uvicorn_log_config

    config = uvicorn.Config(
        distributor,
        host=host,
        port=port,
        loop=loop,
        http=http,
        root_path=root_path,
        access_log=access_log,
        log_level=log_level,
        # Our loggers and uvicorn's through one handler, in the chosen format.
        log_config=uvicorn_log_config(log_level, log_format),
    )
    _log_startup(
        "distributed_asgi.distributor",
        "edge",
        {
            "listen": f"{host}:{port}",
            "redis": _masked_urls(urls),
            "local_redis": _masked_urls([local_redis_url])[0] if local_redis_url else None,
            "prefix": prefix,
            "routes": [f"{regex}={key}" for regex, key in routes],
            "encryption_keys": len(encryption_keys),
            "pickup_timeout": pickup_timeout,
            "first_byte_timeout": first_byte_timeout or None,
            "total_timeout": total_timeout or None,
            "no_worker_status": no_worker_status,
            "max_body_size": distributor.max_body_size,
            "backlog": backlog,
            "metrics": f"{metrics_host}:{metrics_port}" if metrics_port else None,
        },
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
    # handler that was there before it: _exit_cleanly_on_signals' clean exit.
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _exit_cleanly_on_signals() -> dict[int, Any]:
    """Until the server or Node takes over signals, SIGINT/SIGTERM mean a clean exit (0).

    A process stopped while still starting (importing the app) then exits 0 like one stopped
    after a drain, so a supervisor can tell a requested stop from a crash. Returns the handlers
    it replaced.
    """
    return {sig: signal.signal(sig, _exit_now) for sig in (signal.SIGINT, signal.SIGTERM)}


def _exit_now(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


@main.command()
@click.argument("app")
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    metavar="KEY",
    help="Channel to take connections from (a route's key). Repeatable.",
)
@_redis_option
@_local_redis_option
@_prefix_option
@_encryption_option
@_concurrency_option
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds to let in-flight connections finish.",
)
@click.option(
    "--interface",
    type=click.Choice(["auto", "asgi3", "asgi2"]),
    default="auto",
    show_default=True,
    help="Application interface; auto tells ASGI 2 classes from ASGI 3 callables.",
)
@click.option("--asgi2", is_flag=True, help="Same as --interface asgi2.")
@_factory_option
@click.option(
    "--lifespan",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Run the app's lifespan startup/shutdown in this worker.",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
    help="Event loop; auto uses uvloop when installed.",
)
@_app_dir_option
@_log_level_option
@_log_format_option
@_metrics_port_option
@_metrics_host_option
def worker(
    app: str,
    keys: tuple[str, ...],
    redis_urls: tuple[str, ...],
    local_redis_url: str | None,
    prefix: str,
    encryption_keys: tuple[str, ...],
    concurrency: int,
    drain_timeout: float,
    interface: str,
    asgi2: bool,
    factory: bool,
    lifespan: str,
    loop: str,
    app_dir: str,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a worker serving APP (module:attribute) for connections on each --key.

    It needs no inbound port: it pulls connections from Redis. SIGTERM or Ctrl-C stops it taking
    new ones and lets in-flight ones finish (up to --drain-timeout); a second one exits at once.
    """
    urls = _checked_redis_urls(redis_urls)
    layer = _make_layer(urls, prefix, encryption_keys, local_redis_url)
    _check_keys(keys)
    previous = _exit_cleanly_on_signals()
    try:
        application = load_app(
            app, app_dir=app_dir, factory=factory, interface="asgi2" if asgi2 else interface
        )
    except ConfigError as exc:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise _fail(str(exc)) from None
    from distributed_asgi.ops.logs import configure_logging

    configure_logging(log_level, log_format)
    _install_loop(loop)
    _start_metrics(metrics_port, metrics_host)

    from distributed_asgi.node.server import Node

    metrics = None
    if metrics_port is not None:
        from distributed_asgi.ops.metrics import node_metrics

        metrics = node_metrics()
    node = Node(
        app=application,
        keys=list(keys),
        layer=layer,
        max_applications=concurrency,
        drain_timeout=drain_timeout,
        lifespan=lifespan,
        metrics=metrics,
    )
    _log_startup(
        "distributed_asgi.node",
        "worker",
        {
            "app": app,
            "keys": list(keys),
            "redis": _masked_urls(urls),
            "local_redis": _masked_urls([local_redis_url])[0] if local_redis_url else None,
            "prefix": prefix,
            "encryption_keys": len(encryption_keys),
            "concurrency": concurrency,
            "drain_timeout": drain_timeout,
            "lifespan": lifespan,
            "node_id": node.node_id,
            "metrics": f"{metrics_host}:{metrics_port}" if metrics_port else None,
        },
    )
    node.run()


@main.command()
@_redis_option
@_local_redis_option
@_prefix_option
@click.option("--watch", is_flag=True, help="Keep the view up to date until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="With --watch: seconds between refreshes.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON instead of tables (with --watch: one JSON document per line).",
)
def status(
    redis_urls: tuple[str, ...],
    local_redis_url: str | None,
    prefix: str,
    watch: bool,
    interval: float,
    as_json: bool,
) -> None:
    """Show every route channel (backlog, oldest waiting connection, capacity) and every live
    worker (keys, heartbeat, in-flight, served, errors, version, host), read from Redis.

    Workers publish what it shows every heartbeat with a TTL: a dead worker disappears within
    three heartbeats, a stopped one at once.
    """
    import asyncio

    from distributed_asgi.ops.status import StatusError, run

    urls = _checked_redis_urls(redis_urls)
    layer = _make_layer(urls, prefix, (), local_redis_url)
    try:
        asyncio.run(run(layer, watch=interval if watch else None, as_json=as_json))
    except KeyboardInterrupt:
        pass
    except StatusError as exc:
        raise _fail(f"cannot read the status from {', '.join(_masked_urls(urls))}: {exc}") from None


def _check_keys(keys: Sequence[str]) -> None:
    try:
        for key in keys:
            check_key(key)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _install_loop(loop: str) -> None:
    """Make asyncio.run() (which Node.run() uses) create a uvloop loop when asked or available."""
    if loop == "asyncio":
        return
    import asyncio
    import importlib

    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if loop == "uvloop":
            raise _fail("--loop uvloop: uvloop is not installed") from None
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@main.command()
@click.argument("app")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@_route_options[0]
@_route_options[1]
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="KEY",
    help="Keys the workers listen on. Default: every route's key (needed when a key uses "
    "backreferences).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Edge address.")
@click.option("--port", type=int, default=8000, show_default=True, help="Edge port.")
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    help="Use this Redis server. Default: $REDIS_URL, else a private server started (and "
    "stopped) by this command.",
)
@click.option(
    "--prefix",
    default=None,
    help="Key prefix. Default: 'asgi' on a private server, a fresh 'up-...' one on a shared "
    "server. This prefix's keys are deleted on exit.",
)
@_encryption_option
@_concurrency_option
@_pickup_timeout_option
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="On Ctrl-C, seconds to let in-flight connections finish.",
)
@_factory_option
@_app_dir_option
@_log_level_option
def up(
    app: str,
    workers: int,
    route_values: tuple[str, ...],
    routes_file: str | None,
    keys: tuple[str, ...],
    host: str,
    port: int,
    redis_url: str | None,
    prefix: str | None,
    encryption_keys: tuple[str, ...],
    concurrency: int,
    pickup_timeout: float,
    drain_timeout: float,
    factory: bool,
    app_dir: str,
    log_level: str,
) -> None:
    """Run the whole system on this machine: Redis, WORKERS workers serving APP, and the edge.

    For development and demos. With no routes every path goes to one key, 'app'. Ctrl-C stops
    everything (edge first, then workers after they drain, then the private Redis) and leaves
    no process and no key behind.
    """
    from distributed_asgi.ops.supervisor import System, UpConfig

    if not route_values and not routes_file:
        route_values = ("/=app",)
    routes = gather_routes(route_values, routes_file)
    worker_keys = list(keys) or literal_keys(routes)
    if not worker_keys:
        raise _fail("every route's key uses a backreference: say which keys to serve with --key")
    _check_keys(worker_keys)
    url = _checked_redis_url(redis_url) if redis_url or _env_redis_url() else None
    config = UpConfig(
        app=app,
        routes=routes,
        keys=worker_keys,
        workers=workers,
        host=host,
        port=port,
        redis_url=url,
        prefix=prefix,
        concurrency=concurrency,
        pickup_timeout=pickup_timeout,
        drain_timeout=drain_timeout,
        factory=factory,
        app_dir=app_dir,
        log_level=log_level,
        encryption_keys=_checked_encryption_keys(encryption_keys),
    )
    system = System(config)
    try:
        sys.exit(system.serve())
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _env_redis_url() -> str | None:
    import os

    return os.environ.get("REDIS_URL") or None


if __name__ == "__main__":  # pragma: no cover
    main()
