"""``distributed-asgi edge``: an ASGI server (uvicorn unless told otherwise) serving the
distributor."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging.config
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from distributed_asgi.ops.cli.servers import (
    SERVERS,
    Listen,
    ServerUnavailable,
    log_config,
    require,
    serve,
)
from distributed_asgi.ops.collector import tune_collector

if TYPE_CHECKING:
    from distributed_asgi.edge.distributor import Distributor

# uvicorn exits with 3 when its start-up fails; the worker uses the same code.
STARTUP_FAILURE = 3


@click.command()
@route_options[0]
@route_options[1]
@click.option(
    "--server",
    type=click.Choice(SERVERS),
    default="uvicorn",
    show_default=True,
    help="The ASGI server to run the distributor under; hypercorn, granian and daphne are "
    "extras (pip install 'distributed-asgi[hypercorn]').",
)
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
    help="Event loop (uvicorn's, hypercorn's and granian's; daphne's is asyncio).",
)
@click.option(
    "--http",
    type=click.Choice(["auto", "h11", "httptools"]),
    default="auto",
    show_default=True,
    help="HTTP implementation (uvicorn's option).",
)
@click.option(
    "--ssl-certfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Serve HTTPS with this certificate chain (PEM); with hypercorn and granian, "
    "HTTP/2 is negotiated over it.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    metavar="FILE",
    help="The certificate's private key (PEM; PKCS#8 for granian).",
)
@click.option("--root-path", default="", help="ASGI root_path, when mounted below a prefix.")
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True, help="Log every request."
)
@log_and_metrics_options
def edge(
    route_values: tuple[str, ...],
    routes_file: str | None,
    server: str,
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
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    root_path: str,
    access_log: bool,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the edge: an ASGI server (uvicorn by default) serving the distributor on HOST:PORT.

    \b
    Example:
      distributed-asgi edge --route '/api/([a-z-]+)=api-\\1' --route '/=site'
      distributed-asgi edge --route '/=site' --server hypercorn
    """
    listen = Listen(
        host=host,
        port=port,
        root_path=root_path,
        access_log=access_log,
        log_level=log_level,
        log_format=log_format,
        loop=loop,
        http=http,
        certfile=ssl_certfile,
        keyfile=ssl_keyfile,
    )
    try:
        require(server, listen)
    except ServerUnavailable as exc:
        raise fail(str(exc)) from None
    if workers > 1 and server != "uvicorn":
        raise fail(f"--workers is uvicorn's multi-process mode: not with --server {server}")
    if workers > 1 and metrics_port is not None:
        raise fail(
            "--metrics-port serves one process's metrics: with --workers > 1, run separate "
            "edge processes for per-process metrics, or leave --metrics-port off"
        )
    routes = gather_routes(route_values, routes_file)
    urls = checked_redis_urls(redis_urls)
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
    spec = EdgeSpec(
        routes=tuple(routes),
        redis_urls=tuple(urls),
        prefix=prefix,
        encryption_keys=tuple(encryption_keys),
        local_redis_url=local_redis_url,
        backlog=backlog,
        options=options,
        metrics=metrics_port is not None,
    )
    distributor = build_distributor(spec)
    exit_cleanly_on_signals()
    # granian serves from a worker process: its metrics must be served from there.
    in_worker = server == "granian"
    if not in_worker:
        start_metrics(metrics_port, metrics_host)
    logging.config.dictConfig(log_config(listen))
    log_startup(
        "distributed_asgi.distributor",
        "edge",
        {
            "server": server,
            "listen": f"{host}:{port}",
            "tls": listen.tls,
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
        # uvicorn starts each process from an import string: each builds its own distributor
        # (own Redis connections and reply inbox) from the spec, passed in the environment.
        os.environ[SPEC_ENV] = json.dumps(dataclasses.asdict(spec))
    worker_metrics = (metrics_port, metrics_host) if in_worker and metrics_port else None
    rebuild = functools.partial(build_distributor, spec, worker_metrics)
    factory = f"{__name__}:distributor_from_environment" if workers > 1 else None
    tune_collector()
    if not serve(server, listen, distributor, rebuild, workers=workers, factory=factory):
        sys.exit(STARTUP_FAILURE)


@dataclass(frozen=True)
class EdgeSpec:
    """The distributor's configuration, checked: plain data, so a server's worker process
    (granian's) can build its own distributor from it."""

    routes: tuple[tuple[str, str], ...]
    redis_urls: tuple[str, ...]
    prefix: str
    encryption_keys: tuple[str, ...]
    local_redis_url: str | None
    backlog: int
    options: dict[str, Any]
    metrics: bool


def build_distributor(spec: EdgeSpec, serve_metrics: tuple[int, str] | None = None) -> Distributor:
    """The distributor ``spec`` describes; ``serve_metrics`` (port, host) also serves /metrics
    from this process."""
    from distributed_asgi.edge.distributor import Distributor

    layer = make_layer(
        spec.redis_urls, spec.prefix, spec.encryption_keys, spec.local_redis_url, spec.backlog
    )
    options = dict(spec.options)
    if spec.metrics:
        from distributed_asgi.ops.metrics import edge_metrics

        options["metrics"] = edge_metrics()
    try:
        distributor = Distributor(layer, list(spec.routes), **options)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if serve_metrics is not None:
        start_metrics(*serve_metrics)
    return distributor


# The distributor's spec, for the processes of ``--workers`` (``distributor_from_environment``).
SPEC_ENV = "DISTRIBUTED_ASGI_EDGE_SPEC"


def distributor_from_environment() -> Distributor:
    """The factory each ``--workers`` process runs: the distributor of ``SPEC_ENV``."""
    data = json.loads(os.environ[SPEC_ENV])
    data["routes"] = tuple(tuple(route) for route in data["routes"])
    for name in ("redis_urls", "encryption_keys"):
        data[name] = tuple(data[name])
    distributor = build_distributor(EdgeSpec(**data))
    tune_collector()  # each process has its own collector
    return distributor
