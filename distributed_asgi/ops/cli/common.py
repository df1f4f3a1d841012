"""What the commands share: the options that mean the same on several commands, declared once,
and the helpers that turn their values into checked configuration or a layer.

Errors become ``click.ClickException`` (``Error: ...``, exit code 1) naming the bad value.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from distributed_asgi.ops.cli.options import (
    ENCRYPTION_KEYS_ENV,
    ConfigError,
    check_encryption_keys,
    check_key,
    check_key_limits,
    check_redis_url,
    check_redis_urls,
    check_routes,
    load_routes_file,
    parse_route,
    redis_url_or_default,
)

if TYPE_CHECKING:  # the layers import redis-py: not needed for --help
    from distributed_asgi.layers import GatewayLayer

F = TypeVar("F", bound=Callable[..., Any])

LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]
redis_option = click.option(
    "--redis",
    "redis_urls",
    multiple=True,
    metavar="URL",
    help="Redis URL (redis://, rediss://, unix://, or redis+cluster://h1:p1,h2:p2 for a Redis "
    "Cluster). Repeatable: several servers share the channels by consistent hashing; every "
    "edge and worker must list the same ones. Default: $REDIS_URL, else redis://localhost:6379/0.",
)
local_redis_option = click.option(
    "--local-redis",
    "local_redis_url",
    metavar="URL",
    help="A Redis on this machine (a unix:// socket is best) for the route channels, so "
    "requests never leave the machine; --redis then carries only replies "
    "(RedisLocalChannelLayer). Every edge using it needs workers for its routes on the same "
    "machine.",
)
prefix_option = click.option(
    "--prefix",
    default="asgi",
    show_default=True,
    help="Key prefix of the channel layer; the edge and its workers must agree on it.",
)
encryption_option = click.option(
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
log_level_option = click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
    help="Log level.",
)
log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object per line (time, level, logger, message and "
    "the event's fields) for a log collector.",
)
metrics_port_option = click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics on this port (/metrics). Default: no metrics.",
)
metrics_host_option = click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port binds to; 0.0.0.0 for a Prometheus on another machine.",
)
app_dir_option = click.option(
    "--app-dir",
    default=".",
    show_default=True,
    help="Look for APP in this directory, by adding it to the PYTHONPATH.",
)
# Options that mean the same on several commands, declared once.
factory_option = click.option(
    "--factory", is_flag=True, help="APP is a factory: call it with no arguments to get the app."
)
pickup_timeout_option = click.option(
    "--pickup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds the edge waits for a worker to take a connection before answering 503.",
)
concurrency_option = click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Per worker: most connections served at once; beyond it work stays in Redis for "
    "other workers.",
)
route_options = [
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


def _stacked(*options: Callable[[F], F]) -> Callable[[F], F]:
    """The options applied as if written one above the other, in this order (as --help lists)."""

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


# The edge's and the worker's channel-layer options, and their logging and metrics options.
layer_options = _stacked(redis_option, local_redis_option, prefix_option, encryption_option)
log_and_metrics_options = _stacked(
    log_level_option, log_format_option, metrics_port_option, metrics_host_option
)


def fail(message: str) -> click.ClickException:
    return click.ClickException(message)


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """A ``ConfigError`` in the block becomes the command's ``Error: ...`` (its message)."""
    try:
        yield
    except ConfigError as exc:
        raise fail(str(exc)) from None


def gather_routes(route_values: Sequence[str], routes_file: str | None) -> list[tuple[str, str]]:
    """The route table from ``--route`` options then ``--routes FILE``, checked."""
    with config_errors():
        routes = [parse_route(value) for value in route_values]
        if routes_file:
            routes += load_routes_file(routes_file)
        check_routes(routes)
    return routes


def checked_redis_url(url: str | None) -> str:
    with config_errors():
        return check_redis_url(redis_url_or_default(url))


def checked_redis_urls(urls: Sequence[str]) -> list[str]:
    """Every ``--redis``, else ``$REDIS_URL``, else the default; checked alone and together."""
    with config_errors():
        return check_redis_urls(list(urls) or [redis_url_or_default(None)])


def checked_encryption_keys(keys: Sequence[str]) -> list[str]:
    with config_errors():
        return check_encryption_keys(keys)


def make_layer(
    redis_urls: Sequence[str],
    prefix: str,
    encryption_keys: Sequence[str],
    local_redis_url: str | None = None,
    backlog: int | None = None,
) -> GatewayLayer:
    """The layer of a gateway process; route channels hold up to ``backlog`` connects (the
    distributor's default when None), so edges, workers handing connects back and ``status``
    agree on it."""
    from distributed_asgi.layers import RedisChannelLayer, RedisLocalChannelLayer
    from distributed_asgi.layers.build import DEFAULT_BACKLOG, with_backlog

    keys = checked_encryption_keys(encryption_keys)
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
        raise fail(f"invalid --local-redis: {exc}") from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def start_metrics(port: int | None, host: str) -> None:
    """Serve /metrics before the server starts, so a taken port fails the start-up."""
    if port is None:
        return
    from distributed_asgi.ops.metrics import serve_metrics

    try:
        serve_metrics(port, host)
    except OSError as exc:
        raise fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None


def log_startup(component: str, what: str, config: dict[str, Any]) -> None:
    """One line with the effective configuration; secrets are masked or counted, never shown."""
    text = " ".join(f"{name}={value}" for name, value in config.items())
    logging.getLogger(component).info("%s starting: %s", what, text, extra={"config": config})


def layer_fields(urls: Sequence[str], local_redis_url: str | None, prefix: str) -> dict[str, Any]:
    """The start-up line's fields for the layer options, passwords masked."""
    return {
        "redis": masked_urls(urls),
        "local_redis": masked_urls([local_redis_url])[0] if local_redis_url else None,
        "prefix": prefix,
    }


def metrics_address(port: int | None, host: str) -> str | None:
    """The start-up line's ``metrics`` field: where /metrics is served, None when it is not."""
    return f"{host}:{port}" if port else None


def masked_urls(urls: Sequence[str]) -> list[str]:
    from distributed_asgi.layers.hosts import mask_secret

    return [mask_secret(url) for url in urls]


def exit_cleanly_on_signals() -> dict[int, Any]:
    """Until the server or Node takes over signals, SIGINT/SIGTERM mean a clean exit (0).

    A process stopped while still starting (importing the app) then exits 0 like one stopped
    after a drain, so a supervisor can tell a requested stop from a crash. Returns the handlers
    it replaced.
    """
    return {sig: signal.signal(sig, _exit_now) for sig in (signal.SIGINT, signal.SIGTERM)}


def _exit_now(signum: int, frame: FrameType | None) -> None:
    # sys.exit() raises SystemExit wherever the main thread is: inside a weakref callback or a
    # destructor (a garbage collection under way, at start-up or after a server's shutdown) it
    # is ignored, and the process would go on as if never signalled. The timer ends it then;
    # otherwise the process is gone first (the timer's thread is a daemon).
    fallback = threading.Timer(EXIT_FALLBACK, os._exit, args=(0,))
    fallback.daemon = True
    fallback.start()
    sys.exit(0)


# Seconds after a signal's clean exit began before the process is ended without it.
EXIT_FALLBACK = 5.0


def check_keys(keys: Sequence[str]) -> None:
    with config_errors():
        for key in keys:
            check_key(key)


def checked_key_limits(values: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """``--key KEY[:LIMIT]`` values: the keys in order and their limits."""
    with config_errors():
        return check_key_limits(values)
