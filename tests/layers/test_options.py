"""LayerOptions: one validation per kind of value, the same for every layer kind."""

from __future__ import annotations

import math
from typing import Any

import pytest

from distributed_asgi.layers import InMemoryChannelLayer, RedisChannelLayer, RedisLocalChannelLayer
from distributed_asgi.layers.options import LayerOptions

URL = "redis://localhost:6379/0"

LAYERS: list[Any] = [
    lambda **o: RedisChannelLayer(hosts=[URL], **o),
    lambda **o: RedisLocalChannelLayer(hosts=[URL], local_hosts=[URL], **o),
    lambda **o: InMemoryChannelLayer(**o),
]
KINDS = ["redis", "local", "memory"]


@pytest.mark.parametrize("make", LAYERS, ids=KINDS)
@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, True, "60"])
@pytest.mark.parametrize("option", ["expiry", "group_expiry"])
def test_seconds_are_refused_with_the_option_and_value_named(
    make: Any, option: str, value: object
) -> None:
    with pytest.raises(ValueError, match=f"^{option} must be a positive number of seconds, got "):
        make(**{option: value})


@pytest.mark.parametrize("make", LAYERS, ids=KINDS)
@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_capacity_is_refused_not_clamped(make: Any, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^capacity must be a positive integer, got {value!r}$"):
        make(capacity=value)


@pytest.mark.parametrize("value", [0, -1, 1.0, "64"])
def test_max_message_size_is_refused_with_its_value(value: object) -> None:
    with pytest.raises(ValueError, match=r"^max_message_size must be a positive number of bytes"):
        RedisChannelLayer(hosts=[URL], max_message_size=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "a b", 3])
def test_prefix_is_refused_with_its_value(value: object) -> None:
    with pytest.raises(ValueError, match=r"^prefix must be a non-empty string without spaces"):
        RedisLocalChannelLayer(hosts=[URL], local_hosts=[URL], prefix=value)  # type: ignore[arg-type]


def test_every_layer_kind_holds_one_options_object_with_the_same_defaults() -> None:
    redis = RedisChannelLayer(hosts=[URL])
    local = RedisLocalChannelLayer(hosts=[URL], local_hosts=[URL])
    memory = InMemoryChannelLayer()
    for layer in (redis, local, memory):
        assert isinstance(layer.options, LayerOptions)
        assert (layer.options.expiry, layer.options.group_expiry) == (60.0, 86400.0)
        assert layer.options.capacities.default == 100
    # The local+central layer validates once and shares the object with both of its layers.
    assert local.central.options is local.options is local.local.options
    assert redis.options.expiry_ms == 60_000
