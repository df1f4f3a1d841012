"""The layer's own errors for what redis-py and the socket raise, in one place.

Lost or unreachable servers, timeouts and a cluster without a master for a slot are
``LayerUnavailable``; an error reply (OOM, WRONGTYPE, READONLY, NOPERM...) is ``LayerRefused``
(errors.py); replies a cluster placement follows are left to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import LayerError, LayerRefused, LayerUnavailable

__all__ = ["CONNECTION_ERRORS", "is_noscript", "reply_error", "translate", "translated"]

# What a lost or unreachable server looks like from redis-py.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # includes the builtin ConnectionError and TimeoutError
    asyncio.TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
)

# Replies a cluster placement follows (to another node, or again after a pause): left to it,
# which turns what it gives up on into the layer's own errors.
_PLACEMENT_REPLIES = (AskError, MovedError, TryAgainError, ClusterDownError)


def translate(exc: BaseException) -> BaseException:
    """The layer's own exception for a redis-py or socket error, its cause chained; anything
    else (a ``TypeError`` of a bad argument, a layer error already) as it is.

    Lost or unreachable servers, timeouts and a cluster without a master for a slot are
    ``LayerUnavailable``; an error reply (OOM, WRONGTYPE, READONLY, NOPERM...) is
    ``LayerRefused``.
    """
    if isinstance(exc, LayerError):
        return exc
    if isinstance(exc, (*CONNECTION_ERRORS, TryAgainError, ClusterDownError)):
        error: LayerError = LayerUnavailable(f"{type(exc).__name__}: {exc}")
    elif isinstance(exc, ResponseError):
        # redis-py drops the code word of the replies it has a class for (OOM, READONLY...):
        # its class name says it instead.
        plain = type(exc) is ResponseError
        error = LayerRefused(str(exc) if plain else f"{type(exc).__name__}: {exc}")
    elif isinstance(exc, RedisError):  # a reply out of step, a protocol error: the link is bad
        error = LayerUnavailable(f"{type(exc).__name__}: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise the layer's own exceptions for the redis-py errors raised inside."""
    try:
        yield
    except (RedisError, OSError) as exc:
        error = translate(exc)
        if error is exc:
            raise
        raise error from exc


def reply_error(result: Exception) -> BaseException:
    """What an error reply in a batch becomes for its caller: the layer's own error, or the
    redirect itself for a cluster placement to follow."""
    return result if isinstance(result, _PLACEMENT_REPLIES) else translate(result)


def is_noscript(result: object) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT")
    )
