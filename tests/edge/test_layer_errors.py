"""A layer of the user's own signals its server's trouble with the layer's exceptions, and the
edge treats them as it treats the Redis layers': 503 with ``Retry-After``, no application run."""

from __future__ import annotations

import httpx
import pytest

from distributed_asgi import Distributor
from distributed_asgi.layers import InMemoryChannelLayer, LayerError, LayerRefused, LayerUnavailable
from distributed_asgi.layers.base import Message
from tests.gateway.harness import run_uvicorn


class TroubledLayer(InMemoryChannelLayer):
    """A user's layer whose server refuses or cannot take writes to route channels."""

    def __init__(self, error: LayerError) -> None:
        super().__init__()
        self.error = error

    async def send(self, channel: str, message: Message) -> None:
        if "!" not in channel:  # a route channel: the connect the edge hands over
            raise self.error
        await super().send(channel, message)


@pytest.mark.parametrize(
    "error",
    [LayerUnavailable("server gone"), LayerRefused("OOM command not allowed")],
    ids=["unavailable", "refused"],
)
async def test_a_users_layer_errors_get_503(error: LayerError) -> None:
    layer = TroubledLayer(error)
    distributor = Distributor(layer, [("^/", "app")])
    async with run_uvicorn(distributor) as port, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/")
    assert response.status_code == 503
    assert "retry-after" in response.headers
