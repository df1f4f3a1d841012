"""``distributed-asgi status``: the route channels and the live Nodes, read from Redis.

Nothing here talks to an edge or a Node: everything comes from Redis, with SCAN (never KEYS).

- Nodes: every ``P:node:*`` presence key (node/presence.py), on every server of the layer. A Node
  that stopped cleanly deleted its key; one that died is gone once its key's TTL runs out.
- Route channels: the keys the live Nodes listen on, plus every ``P:q:<name>`` queue whose name
  has no ``!`` (those are process inboxes). For each, the backlog (``LLEN``) and the age of the
  oldest waiting entry, from the 13-digit millisecond send time that starts every queue entry
  (layers/keys.py), measured against the Redis server's own clock (``TIME``), as the layer
  does. Capacity is what the Nodes published for the key, else the layer's default.
- A Node's keys show the limits it has and how much of each is in use (``reports 3/4``), in
  their order of preference when it has priority (``high > low``).
- With local+central servers (``--local-redis``), presence is on the central server and the route
  channels on the local one: run status on each machine for its backlogs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

from distributed_asgi.layers import GatewayLayer, LayerError, RedisChannelLayer, central_layer
from distributed_asgi.layers.keys import QUEUE, RETRIES, KeySpace, entry_sent
from distributed_asgi.layers.local import RedisLocalChannelLayer
from distributed_asgi.node.presence import node_key_pattern

__all__ = ["StatusError", "collect", "render", "route_name", "run"]


class StatusError(Exception):
    """Redis could not be read (unreachable, refused the password, ...)."""


def _queue_layer(layer: GatewayLayer) -> RedisChannelLayer:
    if isinstance(layer, RedisLocalChannelLayer) and layer.local is not None:
        return layer.local
    found = central_layer(layer)
    if found is None:
        raise ValueError(f"status needs a Redis channel layer, got {type(layer).__name__}")
    return found


def route_name(key: bytes | str, prefix: str) -> str | None:
    """The route channel a queue key belongs to; None for process inboxes and other keys.

    ``P:q:name``, or ``P:q:{B}name`` on a cluster (B the bucket's hash tag).
    """
    text = key.decode() if isinstance(key, bytes) else key
    name = KeySpace(prefix).name_of(QUEUE, text)
    if not name or "!" in name:
        return None
    return name


async def _nodes(layer: RedisChannelLayer) -> list[dict[str, Any]]:
    nodes = []
    now = time.time()
    for server in await layer.servers():
        keys = await server.scan(node_key_pattern(layer))
        if not keys:
            continue
        # One GET per key in one round trip, not MGET: on a cluster master the keys are in many
        # slots, and a multi-key command across slots is refused.
        values = await server.execute(*(("GET", key) for key in keys))
        for raw in values:
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                node = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(node, dict) or "id" not in node:
                continue
            node["heartbeat_age"] = round(max(0.0, now - float(node.get("heartbeat", now))), 3)
            nodes.append(node)
    nodes.sort(key=lambda n: (str(n.get("host")), str(n.get("id"))))
    return nodes


async def _queued_routes(layer: RedisChannelLayer) -> set[str]:
    names = set()
    for server in await layer.servers():
        for key in await server.scan(layer.keys.pattern(QUEUE)):
            name = route_name(key, layer.prefix)
            if name is not None:
                names.add(name)
    return names


async def _retries(layer: RedisChannelLayer, name: str) -> int:
    """Requests of route ``name`` the edges sent to another Node (edge/retry.py counts them)."""
    server, key = await layer.locate(RETRIES, name)
    (count,) = await server.execute(("GET", key))
    return int(count or 0)


async def _route(
    layer: RedisChannelLayer, central: RedisChannelLayer, name: str, nodes: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    server, key = await layer.locate(QUEUE, name)
    backlog, head, (seconds, micros) = await server.execute(
        ("LLEN", key), ("LINDEX", key, 0), ("TIME",)
    )
    oldest_age = None
    sent_ms = entry_sent(head) if head is not None else None
    if sent_ms is not None:
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        oldest_age = max(0, now_ms - sent_ms) / 1000
    listeners = [n for n in nodes if name in n.get("keys", ())]
    published = [n["capacity"][name] for n in listeners if (n.get("capacity") or {}).get(name)]
    return {
        "key": name,
        "backlog": int(backlog),
        "oldest_age": oldest_age,
        "capacity": max(published) if published else layer.capacity.for_channel(name),
        "nodes": len(listeners),
        "in_flight": sum(int(n.get("in_flight", 0)) for n in listeners),
        "concurrency": sum(int(n.get("concurrency", 0)) for n in listeners),
        "retried": await _retries(central, name),
    }


async def collect(layer: GatewayLayer) -> dict[str, Any]:
    """One snapshot: ``{"time", "prefix", "routes": [...], "nodes": [...]}`` (see docs/cli.md)."""
    central = central_layer(layer)
    if central is None:
        raise ValueError(f"status needs a Redis channel layer, got {type(layer).__name__}")
    queues = _queue_layer(layer)
    nodes = await _nodes(central)
    names = {key for node in nodes for key in node.get("keys", ())}
    names |= await _queued_routes(queues)
    routes = await asyncio.gather(*(_route(queues, central, name, nodes) for name in sorted(names)))
    return {"time": time.time(), "prefix": central.prefix, "routes": routes, "nodes": nodes}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _keys_cell(node: dict[str, Any]) -> str:
    """The keys, a limited one with its use (``reports 3/4``); with priority in their order
    of preference (``high > low``)."""
    limits = node.get("limits") or {}
    in_use = node.get("in_use") or {}
    keys = [
        f"{key} {in_use.get(key, 0)}/{limits[key]}" if key in limits else str(key)
        for key in node.get("keys", ())
    ]
    return (" > " if node.get("priority") else ", ").join(keys)


def render(snapshot: dict[str, Any]) -> Any:
    """The snapshot as rich tables (a ``rich.console.Group``)."""
    from rich.console import Group
    from rich.table import Table

    routes = Table(title=f"Route channels (prefix {snapshot['prefix']!r})", title_justify="left")
    route_columns = (
        "key",
        "backlog",
        "oldest waiting",
        "capacity",
        "nodes",
        "in flight",
        "retried",
    )
    for column in route_columns:
        routes.add_column(column, justify="left" if column == "key" else "right")
    for route in snapshot["routes"]:
        full = route["backlog"] >= route["capacity"]
        routes.add_row(
            route["key"],
            f"[red]{route['backlog']}[/red]" if full else str(route["backlog"]),
            _age(route["oldest_age"]),
            str(route["capacity"]),
            str(route["nodes"]) if route["nodes"] else "[red]0[/red]",
            f"{route['in_flight']}/{route['concurrency']}",
            str(route.get("retried", 0)),
        )
    nodes = Table(title="Nodes", title_justify="left")
    columns = ("id", "keys", "heartbeat", "in flight", "served", "errors", "version", "host", "up")
    for column in columns:
        # An id cut to "web1-4…" is useless: fold it over lines instead when space is short.
        nodes.add_column(
            column,
            justify="right" if column in ("in flight", "served") else "left",
            overflow="fold",
        )
    now = snapshot["time"]
    for node in snapshot["nodes"]:
        nodes.add_row(
            str(node["id"]),
            _keys_cell(node),
            _age(node.get("heartbeat_age")) + " ago",
            f"{node.get('in_flight', 0)}/{node.get('concurrency', '?')}",
            str(node.get("served", 0)),
            str(node.get("errors", 0)),
            str(node.get("version", "?")),
            f"{node.get('host', '?')} pid {node.get('pid', '?')}",
            _age(now - float(node.get("started", now))),
        )
    if not snapshot["routes"]:
        routes.caption = "no route channel: no live Node and nothing queued"
    if not snapshot["nodes"]:
        nodes.caption = "no live Node"
    return Group(routes, nodes)


async def run(layer: GatewayLayer, *, watch: float | None, as_json: bool) -> None:
    """Print one snapshot, or (``watch`` seconds apart) keep printing until interrupted."""
    try:
        if as_json:
            await _print_json(layer, watch)
        else:
            await _show(layer, watch)
    except LayerError as exc:
        raise StatusError(str(exc)) from None
    finally:
        await layer.close()


async def _print_json(layer: GatewayLayer, watch: float | None) -> None:
    while True:
        # One JSON document per line: `--watch --json` is a stream a script can follow.
        print(json.dumps(await collect(layer)), flush=True)
        if watch is None:
            return
        await asyncio.sleep(watch)


async def _show(layer: GatewayLayer, watch: float | None) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if watch is None:
        console.print(render(await collect(layer)))
        return
    with Live(render(await collect(layer)), console=console, auto_refresh=False) as live:
        while True:
            await asyncio.sleep(watch)
            live.update(render(await collect(layer)), refresh=True)
