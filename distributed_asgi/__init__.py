"""Serve ASGI applications from workers anywhere that share only a Redis server.

- ``create_path_distributor`` / ``Distributor``: the edge, an ASGI 3 app for any ASGI server.
- ``Node``: a worker that takes connections from route channels and runs your application.
- ``RouteTable``: the ordered path-regex -> channel-name table the edge routes with.
"""

from distributed_asgi._version import __version__ as __version__
from distributed_asgi.core.frames import FrameError
from distributed_asgi.core.routing import RouteTable
from distributed_asgi.edge.distributor import (
    Distributor,
    RemoteApplicationError,
    create_path_distributor,
)
from distributed_asgi.native import warn_if_stale
from distributed_asgi.node.server import Node

warn_if_stale()

__all__ = [
    "Distributor",
    "FrameError",
    "Node",
    "RemoteApplicationError",
    "RouteTable",
    "create_path_distributor",
]
