"""``distributed-asgi up``: Redis, workers and an edge on this machine, run as one."""

from __future__ import annotations

import sys

import click

from distributed_asgi.ops.cli.common import (
    app_dir_option,
    check_keys,
    checked_encryption_keys,
    checked_redis_url,
    concurrency_option,
    config_errors,
    encryption_option,
    factory_option,
    fail,
    gather_routes,
    log_level_option,
    pickup_timeout_option,
    route_options,
)
from distributed_asgi.ops.cli.options import literal_keys


@click.command()
@click.argument("app")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@route_options[0]
@route_options[1]
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
@encryption_option
@concurrency_option
@pickup_timeout_option
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="On Ctrl-C, seconds to let in-flight connections finish.",
)
@factory_option
@app_dir_option
@log_level_option
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
        raise fail("every route's key uses a backreference: say which keys to serve with --key")
    check_keys(worker_keys)
    url = checked_redis_url(redis_url) if redis_url or _env_redis_url() else None
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
        encryption_keys=checked_encryption_keys(encryption_keys),
    )
    system = System(config)
    with config_errors():
        sys.exit(system.serve())


def _env_redis_url() -> str | None:
    import os

    return os.environ.get("REDIS_URL") or None
