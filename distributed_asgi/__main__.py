"""``python -m distributed_asgi`` is the ``distributed-asgi`` command."""

from distributed_asgi.ops.cli.main import main

main(prog_name="distributed-asgi")
