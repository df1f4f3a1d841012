"""What a run costs, read from the processes and from Redis themselves; shared by every section.

- A process's CPU (user + system) and resident memory come from ``/proc/PID/stat`` and
  ``/proc/PID/status``: the kernel's account, whatever the process runs.
- Redis's work comes from its own counters: ``CONFIG RESETSTAT`` before a run, ``INFO`` after.
  ``INFO commandstats`` counts every command Redis ran, including each one a Lua script ran
  with ``redis.call`` (and the script call itself once, as ``EVALSHA``), so the sum is what
  Redis did, not what the client sent.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCRIPT_COMMANDS",
    "RedisCounters",
    "RedisStats",
    "Window",
    "cpu_delta",
    "cpu_seconds",
    "measured",
    "process_cpu",
    "raise_fd_limit",
    "reset_stats",
    "rss_bytes",
    "script_calls",
]

# The bench's own bookkeeping around each run is not the traffic measured.
_OWN_COMMANDS = ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")
# Commands that run a script: each counts once here, and each call the script makes counts again
# under its own name.
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
_CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class RedisCounters:
    commands: dict[str, int]  # calls per command (lower case, as commandstats names them)
    net_in: int
    net_out: int
    cpu: float  # seconds, system + user, as Redis reports its own

    @classmethod
    def read(cls, url: str) -> RedisCounters:
        """The counters now, over a new connection (whose ``HELLO`` counts: see RedisStats)."""
        with RedisStats(url) as stats:
            return stats.read()

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> RedisCounters:
        commands = {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in info.items()
            if name.startswith("cmdstat_") and name not in _OWN_COMMANDS
        }
        return cls(
            commands=commands,
            net_in=int(info["total_net_input_bytes"]),
            net_out=int(info["total_net_output_bytes"]),
            cpu=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        )

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    @property
    def scripts(self) -> int:
        return script_calls(self.commands)

    def __sub__(self, before: RedisCounters) -> RedisCounters:
        names = set(self.commands) | set(before.commands)
        return RedisCounters(
            commands={n: self.commands.get(n, 0) - before.commands.get(n, 0) for n in names},
            net_in=self.net_in - before.net_in,
            net_out=self.net_out - before.net_out,
            cpu=self.cpu - before.cpu,
        )

    def __add__(self, other: RedisCounters) -> RedisCounters:
        names = set(self.commands) | set(other.commands)
        return RedisCounters(
            commands={n: self.commands.get(n, 0) + other.commands.get(n, 0) for n in names},
            net_in=self.net_in + other.net_in,
            net_out=self.net_out + other.net_out,
            cpu=self.cpu + other.cpu,
        )


class RedisStats:
    """One connection to one server for reading its counters around a run.

    The connection is made (and its ``HELLO`` counted) before ``reset``, and ``INFO`` and
    ``CONFIG`` are left out of the counts, so reading the counters adds nothing to them.
    """

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def reset(self) -> None:
        """``CONFIG RESETSTAT``: commandstats, network and error counters start from zero."""
        self.client.config_resetstat()

    def read(self) -> RedisCounters:
        return RedisCounters.from_info(self.client.info("all"))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RedisStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def script_calls(commands: Mapping[str, int]) -> int:
    return sum(commands.get(name, 0) for name in SCRIPT_COMMANDS)


def reset_stats(url: str) -> None:
    """``CONFIG RESETSTAT`` over a new connection."""
    with RedisStats(url) as stats:
        stats.reset()


def process_cpu(pid: int) -> float | None:
    """Seconds of CPU (user + system) a process has used; None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def child_pids(pid: int) -> set[int]:
    """The running children of ``pid``, from /proc, but for multiprocessing's resource tracker
    (which uvicorn's multi-process mode starts beside its workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in command:
            found.add(int(entry.name))
    return found


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float | None]:
    """``process_cpu`` of each named process."""
    return {name: process_cpu(pid) for name, pid in pids.items()}


def cpu_delta(
    after: Mapping[str, float | None], before: Mapping[str, float | None]
) -> dict[str, float | None]:
    """Per process, the CPU seconds between two ``cpu_seconds`` readings (None if unknown)."""
    out: dict[str, float | None] = {}
    for name, end in after.items():
        start = before.get(name)
        out[name] = None if end is None or start is None else end - start
    return out


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process; None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-file limit (inherited by the servers it starts) to at least
    ``needed`` when the hard limit allows; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


@dataclass
class Window:
    """What ``measured`` read over its block: filled in when the block ends."""

    seconds: float = 0.0
    cpu: dict[str, float | None] = field(default_factory=dict)
    redis: RedisCounters | None = None  # None when no Redis was measured


@contextlib.contextmanager
def measured(pids: Mapping[str, int], redis_url: str | None) -> Iterator[Window]:
    """The wall time, each process's CPU and Redis's counters (``redis_url`` given) over the
    block; Redis's counters are reset first, over a connection made before the reset."""
    window = Window()
    with contextlib.ExitStack() as stack:
        stats = None
        if redis_url is not None:
            stats = stack.enter_context(RedisStats(redis_url))
            stats.reset()
        redis_before = None if stats is None else stats.read()
        cpu_before = cpu_seconds(pids)
        started = time.perf_counter()
        yield window
        window.seconds = time.perf_counter() - started
        window.cpu = cpu_delta(cpu_seconds(pids), cpu_before)
        if stats is not None and redis_before is not None:
            window.redis = stats.read() - redis_before
