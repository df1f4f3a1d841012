"""The recipes in deploy/ parse, and every command they run is a real ``distributed-asgi`` command
with real options and valid routes (parsed by the CLI itself, without running anything).

Also checked: the process manager waits longer than the drain it asks for (else its SIGKILL
cuts the drain short), and the pieces of each recipe point at each other (ports, selectors,
the Redis service name).
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.cluster import ClusterPlacement
from distributed_asgi.layers.hosts import parse_hosts
from distributed_asgi.layers.keys import QUEUE, KeySpace
from distributed_asgi.ops.cli.main import gather_routes, main
from distributed_asgi.ops.cli.options import check_redis_url, load_app

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLE_APP = "examples.starlette_app.app:app"


def parse_command(argv: list[str]) -> click.Context:
    """Parse ``distributed-asgi SUBCOMMAND ...`` with the CLI's own parser; UsageError if bad."""
    program, name, *args = argv
    assert Path(program).name == "distributed-asgi", argv
    assert name in main.commands, f"{name!r} is not a distributed-asgi command"
    context = main.commands[name].make_context(name, list(args))
    if "route_values" in context.params:
        gather_routes(context.params["route_values"], context.params["routes_file"])
    return context


def test_parse_command_rejects_what_the_cli_rejects() -> None:
    with pytest.raises(click.UsageError):
        parse_command(["distributed-asgi", "worker", "app:app", "--key", "k", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse_command(["distributed-asgi", "worker", "app:app"])  # --key is required
    with pytest.raises(click.BadParameter):
        parse_command(["distributed-asgi", "worker", "a:a", "--key", "k", "--drain-timeout", "x"])
    with pytest.raises(click.ClickException):
        parse_command(["distributed-asgi", "edge", "--route", "bad(=x"])
    with pytest.raises(AssertionError):
        parse_command(["distributed-asgi", "serve", "app:app"])


# -- systemd --------------------------------------------------------------------------------


def read_unit(name: str) -> configparser.ConfigParser:
    # No interpolation: systemd's own specifiers (%i) are not configparser's.
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / name).read_text())
    return unit


@pytest.mark.parametrize(
    ("name", "command"),
    [("distributed-asgi-edge.service", "edge"), ("distributed-asgi-worker@.service", "worker")],
)
def test_systemd_units(name: str, command: str) -> None:
    unit = read_unit(name)
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    context = parse_command(shlex.split(service["ExecStart"]))
    assert context.info_name == command
    assert service["KillSignal"] == "SIGTERM"
    assert service["EnvironmentFile"] == "/etc/distributed-asgi/env"
    # Secrets come from the environment file, never the command line.
    assert "--encryption-key" not in service["ExecStart"]
    assert "--redis" not in service["ExecStart"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if command == "worker":
        assert float(service["TimeoutStopSec"]) > context.params["drain_timeout"]
        assert "%i" in unit["Unit"]["Description"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """systemd's own check: unknown keys and bad values are warnings it prints (exit code 0),
    so any line about our files fails. Only the binary's path is changed, to this venv's."""
    installed = str(Path(sys.executable).parent / "distributed-asgi")
    for unit in (DEPLOY / "systemd").iterdir():
        text = unit.read_text().replace("/opt/distributed-asgi/bin/distributed-asgi", installed)
        (tmp_path / unit.name.replace("@.", "@1.")).write_text(text)  # an instance of the template
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["distributed-asgi-edge.service", "distributed-asgi-worker@1.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", *(f"./{name}" for name in names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "distributed-asgi" in line
    ]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# -- Docker Compose -------------------------------------------------------------------------


def test_compose_file_runs_redis_an_edge_and_two_workers() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "edge", "worker"}
    assert services["redis"]["image"].startswith("redis:")

    edge = services["edge"]
    edge_context = parse_command(edge["command"])
    assert edge_context.info_name == "edge"
    assert edge_context.params["host"] == "0.0.0.0"  # reachable from outside its container
    assert edge["ports"] == [f"{edge_context.params['port']}:{edge_context.params['port']}"]
    context = (DEPLOY / edge["build"]["context"]).resolve()  # relative to the compose file
    assert context == ROOT and (context / edge["build"]["dockerfile"]).is_file()

    worker = services["worker"]
    worker_context = parse_command(worker["command"])
    assert worker_context.info_name == "worker"
    assert worker["deploy"]["replicas"] == 2
    assert worker["image"] == edge["image"] and worker["build"] == edge["build"]
    assert _seconds(worker["stop_grace_period"]) > worker_context.params["drain_timeout"]
    # The workers serve the key the edge's only route produces.
    routes = gather_routes(edge_context.params["route_values"], None)
    assert [key for _, key in routes] == list(worker_context.params["keys"])
    assert worker_context.params["app"] == EXAMPLE_APP

    for service in (edge, worker):
        url = check_redis_url(service["environment"]["REDIS_URL"])
        assert url.startswith("redis://redis:")  # the compose service name
        assert "redis" in service["depends_on"]


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


# -- Kubernetes -----------------------------------------------------------------------------


def _by_kind_and_name(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}


def test_kubernetes_manifest() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    objects = _by_kind_and_name(documents)
    assert set(objects) == {
        ("Service", "redis"),
        ("Deployment", "redis"),
        ("Service", "distributed-asgi-edge"),
        ("Deployment", "distributed-asgi-edge"),
        ("Deployment", "distributed-asgi-worker"),
    }
    for doc in documents:
        assert doc["apiVersion"] == ("apps/v1" if doc["kind"] == "Deployment" else "v1")
        if doc["kind"] == "Deployment":
            # A Deployment's selector must match its own pods, or the API server refuses it.
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()

    edge_pod = objects["Deployment", "distributed-asgi-edge"]["spec"]["template"]
    (edge,) = edge_pod["spec"]["containers"]
    edge_context = parse_command(edge["command"])
    assert edge_context.info_name == "edge"
    assert edge_context.params["host"] == "0.0.0.0"
    (port,) = edge["ports"]
    assert port["containerPort"] == edge_context.params["port"]
    service = objects["Service", "distributed-asgi-edge"]["spec"]
    assert service["selector"].items() <= edge_pod["metadata"]["labels"].items()
    assert service["ports"][0]["targetPort"] == port["name"]

    worker_pod = objects["Deployment", "distributed-asgi-worker"]["spec"]["template"]
    (worker,) = worker_pod["spec"]["containers"]
    worker_context = parse_command(worker["command"])
    assert worker_context.info_name == "worker"
    assert "ports" not in worker  # Nodes pull work: no inbound port
    grace = worker_pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > worker_context.params["drain_timeout"]
    routes = gather_routes(edge_context.params["route_values"], None)
    assert [key for _, key in routes] == list(worker_context.params["keys"])

    redis_service = objects["Service", "redis"]["spec"]
    redis_pod = objects["Deployment", "redis"]["spec"]["template"]["metadata"]["labels"]
    assert redis_service["selector"].items() <= redis_pod.items()
    for container in (edge, worker):
        env = {item["name"]: item["value"] for item in container["env"]}
        url = check_redis_url(env["REDIS_URL"])
        assert url.startswith(f"redis://redis:{redis_service['ports'][0]['port']}/")


def test_the_recipes_example_app_imports() -> None:
    """Compose and Kubernetes run examples/starlette_app; it must be importable as written."""
    assert callable(load_app(EXAMPLE_APP, app_dir=str(ROOT)))


# -- Autoscaling: KEDA on the route channel's backlog, or an HPA on the in-flight metric ------


def _worker_and_redis() -> tuple[click.Context, str]:
    objects = _by_kind_and_name(list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())))
    (worker,) = objects["Deployment", "distributed-asgi-worker"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = {item["name"]: item["value"] for item in worker["env"]}
    return parse_command(worker["command"]), env["REDIS_URL"]


async def _queue_key(url: str, key: str) -> str:
    """The Redis list the layer really uses for route ``key``'s connects."""
    layer = RedisChannelLayer(hosts=[url])
    try:
        _, name = await layer.locate(QUEUE, key)
    finally:
        await layer.close()
    return name


@pytest.mark.asyncio
async def test_keda_scales_the_workers_on_their_route_channel() -> None:
    (scaled,) = yaml.safe_load_all((DEPLOY / "kubernetes-keda.yaml").read_text())
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "distributed-asgi-worker"
    # Not to zero: a connection waits --pickup-timeout for a worker, less than a pod's start.
    assert scaled["spec"]["minReplicaCount"] >= 1
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    worker, redis_url = _worker_and_redis()
    (key,) = worker.params["keys"]
    assert trigger["metadata"]["listName"] == await _queue_key(redis_url, key) == "asgi:q:app"
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    assert trigger["metadata"]["address"] == host_port
    assert int(trigger["metadata"]["listLength"]) > 0


def test_keda_on_a_redis_cluster_names_the_hash_tagged_list() -> None:
    (scaled,) = yaml.safe_load_all((DEPLOY / "kubernetes-keda-cluster.yaml").read_text())
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-cluster"
    worker, _ = _worker_and_redis()
    (key,) = worker.params["keys"]
    # The cluster placement's own key for the route: its hash tag, computed by the layer.
    placement = ClusterPlacement(parse_hosts(["redis+cluster://redis-0:6379"])[0], KeySpace("asgi"))
    expected = KeySpace("asgi").queue(key, placement.tag(placement.place(key)))
    assert trigger["metadata"]["listName"] == expected
    assert expected.startswith("asgi:q:{") and expected.endswith("}" + key)
    for address in trigger["metadata"]["addresses"].split(","):
        check_redis_url(f"redis://{address}")


def test_the_hpa_alternative_targets_the_workers_in_flight_metric() -> None:
    (hpa,) = yaml.safe_load_all((DEPLOY / "kubernetes-hpa.yaml").read_text())
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "distributed-asgi-worker",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "distributed_asgi_node_in_flight"
    assert "distributed_asgi_node_in_flight" in (ROOT / "docs" / "operations.md").read_text()

    patch = yaml.safe_load((DEPLOY / "kubernetes-hpa-worker-patch.yaml").read_text())
    pod = patch["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "worker"
    worker = parse_command(container["command"])
    assert worker.params["metrics_port"] == int(
        pod["metadata"]["annotations"]["prometheus.io/port"]
    )
    assert worker.params["metrics_host"] == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [worker.params["metrics_port"]]
    # The target is a share of what one worker may serve at once.
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < worker.params["concurrency"]
    original, _ = _worker_and_redis()
    assert worker.params["app"] == original.params["app"]
    assert worker.params["keys"] == original.params["keys"]
