"""``distributed-asgi edge``: uvicorn serving the distributor."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from distributed_asgi.ops.cli.common import (
    checked_redis_urls,
    exit_cleanly_on_signals,
    fail,
    gather_routes,
    layer_fields,
    layer_options,
    log_and_metrics_options,
    log_startup,
    make_layer,
    metrics_address,
    pickup_timeout_option,
    route_options,
    start_metrics,
)

# uvicorn exits with 3 when its start-up fails; the worker uses the same code.
STARTUP_FAILURE = 3


@click.command()
@route_options[0]
@route_options[1]
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind to this address.")
@click.option("--port", type=int, default=8000, show_default=True, help="Bind to this port.")
@layer_options
@pickup_timeout_option
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
    help="Status answered when no worker takes a connection in time.",
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
    "--retries",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    metavar="N",
    help="Times a request whose worker was lost before it answered goes to another worker "
    "(safe methods, whole body known, nothing sent to the client yet); 0: never.",
)
@click.option(
    "--retry-method",
    "retry_methods",
    multiple=True,
    metavar="METHOD",
    help="A method that may be retried (repeatable). Default: GET, HEAD, OPTIONS.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Edge processes serving the port (uvicorn's multi-process mode), each with its own "
    "Redis connections; one that dies is replaced.",
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
@log_and_metrics_options
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
    retries: int,
    retry_methods: tuple[str, ...],
    workers: int,
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
    urls = checked_redis_urls(redis_urls)
    if workers > 1 and metrics_port is not None:
        raise fail(
            "--metrics-port serves one process's metrics: with --workers > 1, run separate "
            "edge processes for per-process metrics, or leave --metrics-port off"
        )
    options: dict[str, Any] = {
        "pickup_timeout": pickup_timeout,
        "first_byte_timeout": first_byte_timeout or None,
        "total_timeout": total_timeout or None,
        "no_worker_status": no_worker_status,
        "retries": retries,
    }
    if retry_methods:
        options["retry_methods"] = list(retry_methods)
    if max_body_size is not None:
        options["max_body_size"] = max_body_size
    recipe = {
        "routes": routes,
        "urls": urls,
        "prefix": prefix,
        "encryption_keys": list(encryption_keys),
        "local_redis_url": local_redis_url,
        "backlog": backlog,
        "options": options,
    }
    distributor = distributor_from(recipe, metrics=metrics_port is not None)
    exit_cleanly_on_signals()

    import uvicorn

    start_metrics(metrics_port, metrics_host)
    from distributed_asgi.ops.logs import uvicorn_log_config

    config = uvicorn.Config(
        distributor if workers == 1 else f"{__name__}:distributor_from_environment",
        factory=workers > 1,
        workers=workers,
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
    log_startup(
        "distributed_asgi.distributor",
        "edge",
        {
            "listen": f"{host}:{port}",
            **layer_fields(urls, local_redis_url, prefix),
            "routes": [f"{regex}={key}" for regex, key in routes],
            "encryption_keys": len(encryption_keys),
            "pickup_timeout": pickup_timeout,
            "first_byte_timeout": first_byte_timeout or None,
            "total_timeout": total_timeout or None,
            "no_worker_status": no_worker_status,
            "max_body_size": distributor.max_body_size,
            "backlog": backlog,
            "retries": retries,
            "retry_methods": sorted(distributor.settings.retry_methods),
            "workers": workers,
            "metrics": metrics_address(metrics_port, metrics_host),
        },
    )
    if workers > 1:
        _serve_processes(config, recipe)
        return
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
    # handler that was there before it: exit_cleanly_on_signals' clean exit.
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


# The distributor's recipe, for the processes of ``--workers``: uvicorn starts each from an
# import string, so each builds its own distributor (own Redis connections and reply inbox).
RECIPE_ENV = "DISTRIBUTED_ASGI_EDGE_RECIPE"


def distributor_from(recipe: dict[str, Any], *, metrics: bool = False) -> Any:
    """The distributor the edge command's options describe (``recipe``, plain JSON data)."""
    from distributed_asgi.edge.distributor import Distributor

    layer = make_layer(
        recipe["urls"],
        recipe["prefix"],
        recipe["encryption_keys"],
        recipe["local_redis_url"],
        recipe["backlog"],
    )
    options = dict(recipe["options"])
    if metrics:
        from distributed_asgi.ops.metrics import edge_metrics

        options["metrics"] = edge_metrics()
    try:
        return Distributor(layer, [tuple(route) for route in recipe["routes"]], **options)
    except ValueError as exc:
        raise fail(str(exc)) from None


def distributor_from_environment() -> Any:
    """The factory each ``--workers`` process runs (``RECIPE_ENV``, set by the parent)."""
    return distributor_from(json.loads(os.environ[RECIPE_ENV]))


def _serve_processes(config: Any, recipe: dict[str, Any]) -> None:
    """uvicorn's own multi-process mode: it binds the socket, starts the processes, restarts
    one that dies, and on SIGTERM stops them all, each finishing its requests first."""
    from uvicorn.supervisors import Multiprocess

    os.environ[RECIPE_ENV] = json.dumps(recipe)
    Multiprocess(config, sockets=[config.bind_socket()]).run()
