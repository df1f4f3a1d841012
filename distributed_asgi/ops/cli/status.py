"""``distributed-asgi status``: the route channels and the live workers, read from Redis."""

from __future__ import annotations

import click

from distributed_asgi.ops.cli.common import (
    checked_redis_urls,
    fail,
    local_redis_option,
    make_layer,
    masked_urls,
    prefix_option,
    redis_option,
)


@click.command()
@redis_option
@local_redis_option
@prefix_option
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

    urls = checked_redis_urls(redis_urls)
    layer = make_layer(urls, prefix, (), local_redis_url)
    try:
        asyncio.run(run(layer, watch=interval if watch else None, as_json=as_json))
    except KeyboardInterrupt:
        pass
    except StatusError as exc:
        raise fail(f"cannot read the status from {', '.join(masked_urls(urls))}: {exc}") from None
