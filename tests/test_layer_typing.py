"""``layer=`` of the Distributor and the Node accepts every layer here under ``mypy --strict``.

The gateway types it with the ``GatewayLayer`` protocol (send, receive, new_channel, close), so
users' code passing ``RedisLocalChannelLayer``, ``RedisClusterChannelLayer`` or
``InMemoryChannelLayer`` type-checks; an object without those methods does not.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

GOOD = """
from typing import Any

from distributed_asgi.edge.distributor import Distributor, create_path_distributor
from distributed_asgi.layers.build import build_layer
from distributed_asgi.layers import (
    InMemoryChannelLayer,
    RedisChannelLayer,
    RedisClusterChannelLayer,
    RedisLocalChannelLayer,
)
from distributed_asgi.node.server import Node


async def app(scope: Any, receive: Any, send: Any) -> None: ...


local = RedisLocalChannelLayer(hosts=["redis://c:6379"], local_hosts=["unix:///tmp/r.sock"])
cluster = RedisClusterChannelLayer(hosts=["redis+cluster://a:7000"])
Distributor(InMemoryChannelLayer(), {"/": "site"})
Distributor(local, {"/": "site"})
create_path_distributor(routes={"/": "site"}, layer=cluster)
Node(app=app, keys=["site"], layer=local)
Node(app=app, keys=["site"], layer=InMemoryChannelLayer())
Node(app=app, keys=["site"], layer=RedisChannelLayer())
build_layer(layer=InMemoryChannelLayer())
"""

BAD = """
from distributed_asgi.edge.distributor import Distributor


class NotALayer:
    async def send(self, channel: str, message: dict[str, object]) -> None: ...


Distributor(NotALayer(), {"/": "site"})
"""


def test_every_layer_type_checks_and_a_non_layer_does_not(tmp_path: Path) -> None:
    # One mypy run for both files: a cold strict run costs seconds.
    good, bad = tmp_path / "good_user_code.py", tmp_path / "bad_user_code.py"
    good.write_text(textwrap.dedent(GOOD))
    bad.write_text(textwrap.dedent(BAD))
    stdout, stderr, status = mypy_api.run(
        ["--strict", "--no-incremental", "--python-version", "3.10", str(good), str(bad)]
    )
    output = stdout + stderr
    assert "good_user_code.py" not in output, output
    assert status == 1, output
    assert "bad_user_code.py" in output and "GatewayLayer" in output, output
