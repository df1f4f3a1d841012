"""Benchmarks run by ``make bench`` (``python -m bench [SECTION]``).

Each section measures one face of distributed_asgi side by side with the tool it replaces, on
private servers started for the run, prints a table with ratios and PASS/MISSED against the
targets, and records it in its own section of docs/benchmarks.md.

- ``layer`` (``bench.layer``): the channel layer against channels_redis, windowed and one
  operation at a time, with the CPU each operation costs.
- ``http`` (``bench.http``): a hello world direct on uvicorn and through the gateway, with the
  CPU per request of every process and Redis's commands per request.
- ``idle`` (``bench.idle``): idle WebSockets held through the gateway and direct: Redis
  commands per second, CPU and memory per connection.
- ``scaling`` (``bench.scaling``): Redis's cost per request, one host vs three.

``python -m bench.profile`` profiles the edge and the worker under the HTTP load (cProfile).
"""
