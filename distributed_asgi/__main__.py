"""``python -m distributed_asgi`` is the ``distributed-asgi`` command."""

from .cli import main

main(prog_name="distributed-asgi")
