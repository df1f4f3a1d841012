"""A batch of calls as the commands of one write, and their replies as one result per call.

Pure: no I/O. The shard (shard.py) queues calls, writes ``assemble(batch)``'s commands in one
write and gives each caller its part of ``regroup(...)``.

- A call is (script, keys, args, future). Script None is an ack: keys is [counter key] and
  args holds one Counter of channel -> messages received, taken from the ledger for this
  batch. ``COMMAND`` is a plain command: args is the command. ``COMMANDS`` is several plain
  commands written together (args holds them), answered with the list of their replies, or
  with the first error reply among them. Any other script is an ``EVALSHA``.
- Pushes (``RPUSH q entry``, ``PEXPIRE q ms``) to one queue, one after the other, are one
  ``RPUSH`` of all their entries and one ``PEXPIRE``: the same effect, in the same order. A
  plain command between two of them (a claim of another key) is written after them.
- Each push of a merged ``RPUSH`` is answered the length its own ``RPUSH`` would have
  returned (the list's length just after its entry), so a send can judge its capacity by it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .scripts import LuaScript

__all__ = [
    "COMMAND",
    "COMMANDS",
    "Call",
    "Span",
    "ack_commands",
    "assemble",
    "pushed_to",
    "regroup",
]

COMMAND = LuaScript("command", "")
COMMANDS = LuaScript("commands", "")
# A call nobody waits for (an ack, a post) has no future: a failure is logged instead.
Call = tuple[LuaScript | None, Sequence[str], list[Any], "asyncio.Future[Any] | None"]


# Per call: its first reply, how many, and (a merged push) the entries pushed after its own.
Span = tuple[int, int, int]


def assemble(batch: list[Call]) -> tuple[list[Sequence[Any]], list[Span]]:
    """The commands of ``batch``, and per call where its replies are."""
    commands: list[Sequence[Any]] = []
    spans: list[Span] = [(0, 0, 0)] * len(batch)
    at = 0
    while at < len(batch):
        script, keys, args, _ = batch[at]
        start = len(commands)
        if script is COMMANDS:
            queue = pushed_to(args)
            if queue is not None:
                pushes, passed = _push_run(batch, at, queue)
                commands += [("RPUSH", queue, *(batch[i][2][0][2] for i in pushes)), args[1]]
                last = len(pushes) - 1
                for n, i in enumerate(pushes):
                    spans[i] = (start, 2, last - n)
                for i in passed:
                    spans[i] = (len(commands), 1, 0)
                    commands.append(batch[i][2])
                at = pushes[-1] + 1  # the commands passed over lie between the pushes
                continue
            commands.extend(args)
        elif script is None:
            commands += ack_commands(keys[0], args[0])
        elif script is COMMAND:
            commands.append(args)
        else:
            commands.append(("EVALSHA", script.sha, len(keys), *keys, *args))
        spans[at] = (start, len(commands) - start, 0)
        at += 1
    return commands, spans


def pushed_to(args: Sequence[Any]) -> str | None:
    """The queue of a push's commands (``RPUSH q entry``, ``PEXPIRE q ms``); None for others."""
    if len(args) == 2 and len(args[0]) == 3 and args[0][0] == "RPUSH" and args[1][0] == "PEXPIRE":
        queue: str = args[0][1]
        return queue if args[1][1] == queue else None
    return None


def _push_run(batch: list[Call], at: int, queue: str) -> tuple[list[int], list[int]]:
    """The pushes to ``queue`` from ``batch[at]`` on, and the plain commands between them."""
    pushes: list[int] = [at]
    passed: list[int] = []
    between: list[int] = []
    for index in range(at + 1, len(batch)):
        script, _, args, _ = batch[index]
        if script is COMMANDS and pushed_to(args) == queue:
            pushes.append(index)
            passed += between
            between = []
        elif script is COMMAND:
            between.append(index)
        else:
            break
    return pushes, passed


def regroup(batch: list[Call], spans: list[Span], replies: list[Any]) -> list[Any]:
    """One result per call of ``batch``: a COMMANDS call's replies gathered into one (the
    first error reply instead, if any)."""
    results: list[Any] = []
    for (script, *_), (start, count, after) in zip(batch, spans, strict=True):
        if script is not COMMANDS and script is not None:
            results.append(replies[start])
            continue
        group = replies[start : start + count]
        for reply in group:  # a loop, not next() over a generator: this runs per call
            if isinstance(reply, Exception):
                results.append(reply)
                break
        else:
            if after:
                group[0] -= after
            results.append(group)
    return results


def ack_commands(counter_key: str, counts: Counter[str]) -> list[tuple[Any, ...]]:
    # Plain commands, one per channel, not a script: one written after a call in the same
    # batch may never be reordered after it, as a script call answered NOSCRIPT (and run again
    # after the rest of its batch) would be; and each costs the server less than a script's
    # call of it.
    return [("HINCRBY", counter_key, channel, -count) for channel, count in counts.items()]
