"""The public API's construction rules (no servers needed)."""

from __future__ import annotations

import pytest

from distributed_asgi import Distributor, Node, RouteTable, create_path_distributor
from distributed_asgi.layers import RedisChannelLayer


def redis_layer(built: Distributor | Node) -> RedisChannelLayer:
    assert isinstance(built.layer, RedisChannelLayer), built.layer
    return built.layer


class Asgi2App:
    def __init__(self, scope: dict[str, object]) -> None:
        self.scope = scope

    async def __call__(self, receive: object, send: object) -> None:
        pass


async def asgi3_app(scope: object, receive: object, send: object) -> None:
    pass


def test_redis_url_from_the_environment_when_no_host_or_port_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://envhost:7000/2")
    distributor = create_path_distributor(routes={"/": "all"})
    assert redis_layer(distributor).hosts[0].identity == "redis://envhost:7000/2"
    explicit = create_path_distributor(host="other", port="6380", routes={"/": "all"})
    assert redis_layer(explicit).hosts[0].identity == "redis://other:6380"
    node = Node(app=asgi3_app, key="k")
    assert redis_layer(node).hosts[0].identity == "redis://envhost:7000/2"


def test_seed_arguments_build_a_layer_with_a_string_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    node = Node(host="example.org", port="6379", password="abc123", cls=Asgi2App, key="ASGI-t")
    assert redis_layer(node).hosts[0].identity == "redis://example.org:6379"
    assert node.asgi_version == "2.0"
    assert Node(app=asgi3_app, keys=["a", "b", "a"]).keys == ["a", "b"]


def test_layer_argument_is_used_as_is() -> None:
    layer = RedisChannelLayer(prefix="mine")
    assert create_path_distributor(layer=layer, routes={"/": "all"}).layer is layer
    assert Node(app=asgi3_app, key="k", layer=layer).layer is layer
    with pytest.raises(ValueError, match="either layer= or Redis connection settings"):
        Node(app=asgi3_app, key="k", layer=layer, host="x")


def test_distributor_options_are_checked() -> None:
    layer = RedisChannelLayer()
    with pytest.raises(ValueError, match="needs routes"):
        create_path_distributor(layer=layer)
    with pytest.raises(ValueError, match="pickup_timeout"):
        Distributor(layer, {"/": "all"}, pickup_timeout=0)
    with pytest.raises(ValueError, match=r"first_byte_timeout must be .* got -1"):
        Distributor(layer, {"/": "all"}, first_byte_timeout=-1)
    with pytest.raises(ValueError, match=r"total_timeout must be .* got 'x'"):
        Distributor(layer, {"/": "all"}, total_timeout="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no_worker_status"):
        Distributor(layer, {"/": "all"}, no_worker_status=200)
    with pytest.raises(ValueError, match="route '\\('"):
        Distributor(layer, {"(": "all"})
    table = RouteTable({"/": "all"})
    assert Distributor(layer, table).routes is table


def test_url_and_host_together_are_an_error() -> None:
    with pytest.raises(ValueError, match="either url= or host/port/password"):
        Node(app=asgi3_app, key="k", url="redis://x:1/0", host="y")


def test_drain_timeout_may_be_zero_but_not_negative() -> None:
    assert Node(app=asgi3_app, key="k", drain_timeout=0).drain_timeout == 0
    with pytest.raises(ValueError, match="drain_timeout"):
        Node(app=asgi3_app, key="k", drain_timeout=-1)


def test_interface_is_checked_and_decides_the_scopes_asgi_version() -> None:
    assert Node(cls=Asgi2App, key="k").asgi_version == "2.0"
    assert Node(app=asgi3_app, key="k").asgi_version == "3.0"
    assert Node(app=asgi3_app, key="k", interface="asgi2").asgi_version == "2.0"
    with pytest.raises(
        ValueError, match=r"^interface must be one of 'auto', 'asgi3', 'asgi2', got 'wsgi'$"
    ):
        Node(app=asgi3_app, key="k", interface="wsgi")
