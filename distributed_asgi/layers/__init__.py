"""Channel layers with the Django Channels API.

``RedisChannelLayer`` is usable as a ``CHANNEL_LAYERS`` backend::

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "distributed_asgi.layers.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://localhost:6379/0"]},
        }
    }
"""

from .base import ChannelFull, ClaimingLayer, GatewayLayer, WrongClientPrefix, claiming
from .cluster import RedisClusterChannelLayer
from .errors import LayerError, LayerRefused, LayerUnavailable
from .local import RedisLocalChannelLayer, central_layer
from .memory import InMemoryChannelLayer
from .redis import RedisChannelLayer

__all__ = [
    "ChannelFull",
    "ClaimingLayer",
    "GatewayLayer",
    "InMemoryChannelLayer",
    "LayerError",
    "LayerRefused",
    "LayerUnavailable",
    "RedisChannelLayer",
    "RedisClusterChannelLayer",
    "RedisLocalChannelLayer",
    "WrongClientPrefix",
    "central_layer",
    "claiming",
]
