"""Logging for the ``edge`` and ``worker`` commands: one handler on stderr, text or JSON lines.

Components log through the standard ``logging`` module, one logger each
(``distributed_asgi.distributor`` for the edge, ``distributed_asgi.node``,
``distributed_asgi.layers``, ``distributed_asgi.cli``); this module only decides where and how
those lines are written. The same formatter serves uvicorn's loggers under the edge, so an edge
in JSON mode writes nothing but JSON lines.

JSON: one object per line with ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
``message``, any ``extra={...}`` fields of the call, and ``exception`` when there is one.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any

__all__ = [
    "LOG_FORMATS",
    "JSONFormatter",
    "configure_logging",
    "numeric_level",
    "uvicorn_log_config",
]

LOG_FORMATS = ["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
TRACE = 5  # uvicorn's "trace" level

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message: noise in JSON
    "taskName",  # Python 3.12+
}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra value JSON cannot hold still yields a line that parses.
        return json.dumps(entry, default=str, ensure_ascii=False)


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def numeric_level(level: str) -> int:
    if level == "trace":
        return TRACE
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def _formatter_config(log_format: str) -> dict[str, Any]:
    if log_format == "json":
        return {"()": JSONFormatter}
    if log_format == "text":
        return {"format": TEXT_FORMAT}
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")


def uvicorn_log_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the edge: uvicorn's loggers and ours, one handler.

    uvicorn applies it at start-up (``uvicorn.Config(log_config=...)``); without it the
    distributor's own loggers have no handler and their warnings reach stderr through
    ``logging.lastResort``, with neither level nor time.
    """
    numeric = numeric_level(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": _formatter_config(log_format)},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        # Everything propagates to the root logger's one handler, so no line is written twice.
        "root": {"handlers": ["default"], "level": numeric},
        "loggers": {
            "uvicorn": {"handlers": [], "level": numeric, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": numeric, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": numeric, "propagate": True},
        },
    }


def configure_logging(level: str, log_format: str = "text") -> None:
    """Configure the root logger (the worker, and anything run outside uvicorn)."""
    config = uvicorn_log_config(level, log_format)
    config["loggers"] = {}
    logging.config.dictConfig(config)
