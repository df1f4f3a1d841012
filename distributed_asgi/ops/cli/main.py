"""``distributed-asgi``: run the edge, a worker, or the whole system on one machine.

Conventions are uvicorn's: apps are ``module:attribute`` import strings, ``--app-dir`` is put on
``sys.path``, and bad configuration stops the command at start-up with ``Error: ...`` naming the
bad value (exit code 2 for usage errors, 1 for the rest), before any server starts. Each command
is a module of this package; what they share is in ``common``.
"""

from __future__ import annotations

import click

from distributed_asgi.ops.cli.common import gather_routes
from distributed_asgi.ops.cli.edge import edge
from distributed_asgi.ops.cli.status import status
from distributed_asgi.ops.cli.up import up
from distributed_asgi.ops.cli.worker import worker

__all__ = ["gather_routes", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distributed-asgi")
def main() -> None:
    """Serve ASGI apps from workers anywhere that share a Redis server.

    An edge (an ASGI server running the distributor) takes HTTP and WebSocket connections and
    hands each one, through Redis, to whichever worker listening on the route's key picks it up.
    """


for _command in (edge, worker, status, up):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
