"""``distributed-asgi worker``: a Node serving an app for the connections on its keys."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import click

from distributed_asgi.ops.cli.common import (
    app_dir_option,
    checked_key_limits,
    checked_redis_urls,
    concurrency_option,
    exit_cleanly_on_signals,
    factory_option,
    fail,
    layer_fields,
    layer_options,
    log_and_metrics_options,
    log_startup,
    make_layer,
    metrics_address,
    start_metrics,
)
from distributed_asgi.ops.cli.options import ConfigError, load_app


@click.command()
@click.argument("app")
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    metavar="KEY[:LIMIT]",
    help="Channel to take connections from (a route's key). Repeatable. KEY:LIMIT runs at most "
    "LIMIT of its connections at once (within --concurrency); beyond it they stay in Redis for "
    "other workers.",
)
@layer_options
@concurrency_option
@click.option(
    "--priority",
    is_flag=True,
    help="Prefer the keys in their --key order: the first key's waiting connections are taken "
    "before the next key's (each later key keeps a share: --priority-share).",
)
@click.option(
    "--priority-share",
    type=click.IntRange(min=2),
    default=10,
    show_default=True,
    metavar="N",
    help="With --priority: a key passed over for N-1 connections taken on keys before it gets "
    "the next one, so it has at least one in N while it has waiting connections.",
)
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
@factory_option
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
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Run N worker processes under this one, which restarts any that crashes; with "
    "--metrics-port P, process i serves metrics on P+i.",
)
@app_dir_option
@log_and_metrics_options
def worker(
    app: str,
    keys: tuple[str, ...],
    redis_urls: tuple[str, ...],
    local_redis_url: str | None,
    prefix: str,
    encryption_keys: tuple[str, ...],
    concurrency: int,
    priority: bool,
    priority_share: int,
    drain_timeout: float,
    interface: str,
    asgi2: bool,
    factory: bool,
    lifespan: str,
    loop: str,
    app_dir: str,
    processes: int,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a worker serving APP (module:attribute) for connections on each --key.

    It needs no inbound port: it pulls connections from Redis. SIGTERM or Ctrl-C stops it taking
    new ones and lets in-flight ones finish (up to --drain-timeout); a second one exits at once.
    """
    urls = checked_redis_urls(redis_urls)
    layer = make_layer(urls, prefix, encryption_keys, local_redis_url)
    key_names, limits = checked_key_limits(keys)
    if processes > 1:
        _run_pool(processes, metrics_port, log_level, log_format)
    previous = exit_cleanly_on_signals()
    try:
        application = load_app(
            app, app_dir=app_dir, factory=factory, interface="asgi2" if asgi2 else interface
        )
    except ConfigError as exc:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise fail(str(exc)) from None
    from distributed_asgi.ops.logs import configure_logging

    configure_logging(log_level, log_format)
    _install_loop(loop)
    start_metrics(metrics_port, metrics_host)

    from distributed_asgi.node.server import Node

    metrics = None
    if metrics_port is not None:
        from distributed_asgi.ops.metrics import node_metrics

        metrics = node_metrics()
    node = Node(
        app=application,
        keys=key_names,
        layer=layer,
        max_applications=concurrency,
        limits=limits,
        priority=priority,
        priority_share=priority_share,
        drain_timeout=drain_timeout,
        lifespan=lifespan,
        metrics=metrics,
        loop=loop,
    )
    log_startup(
        "distributed_asgi.node",
        "worker",
        {
            "app": app,
            "keys": key_names,
            "limits": limits,
            "priority": priority,
            "priority_share": priority_share if priority else None,
            **layer_fields(urls, local_redis_url, prefix),
            "encryption_keys": len(encryption_keys),
            "concurrency": concurrency,
            "drain_timeout": drain_timeout,
            "lifespan": lifespan,
            "node_id": node.node_id,
            "metrics": metrics_address(metrics_port, metrics_host),
        },
    )
    from distributed_asgi.ops.collector import tune_collector

    tune_collector()
    node.run()


def _run_pool(processes: int, metrics_port: int | None, log_level: str, log_format: str) -> None:
    """Run ``processes`` copies of this command (without ``--processes``); exits with the
    pool's code."""
    from distributed_asgi.ops.logs import configure_logging
    from distributed_asgi.ops.pool import ProcessPool

    configure_logging(log_level, log_format)
    args = _without_option(sys.argv[1:], "--processes")
    if metrics_port is not None:
        args = _without_option(args, "--metrics-port")

    def command(index: int) -> list[str]:
        port = [] if metrics_port is None else ["--metrics-port", str(metrics_port + index)]
        return [sys.executable, "-m", "distributed_asgi", *args, *port]

    sys.exit(ProcessPool("worker", command, processes).run())


def _without_option(args: Sequence[str], option: str) -> list[str]:
    """``args`` without ``option`` and its value (``--option V`` or ``--option=V``)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


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
            raise fail("--loop uvloop: uvloop is not installed") from None
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
