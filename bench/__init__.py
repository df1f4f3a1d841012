"""Benchmarks run by ``make bench`` (``python -m bench [SECTION]``).

Each section measures one face of distributed_asgi side by side with the tool it replaces, on
private servers started for the run, prints a table with ratios and PASS/FAIL against the
targets, and records it in its own section of docs/benchmarks.md.

- ``layer`` (``bench.layer``): the channel layer against channels_redis.
"""
