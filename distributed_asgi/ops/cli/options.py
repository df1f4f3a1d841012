"""Turn command-line values into checked configuration, with errors that name the bad value.

Kept apart from the commands (and free of click) so the supervisor, the demo and the benchmark use
the same parsing, and so the rules are testable without running a command. Every function raises
``ConfigError`` whose text is what the user sees after ``Error: ``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_REDIS_URL",
    "ENCRYPTION_KEYS_ENV",
    "ConfigError",
    "check_encryption_keys",
    "check_key",
    "check_key_limits",
    "check_redis_url",
    "check_redis_urls",
    "check_routes",
    "literal_keys",
    "load_app",
    "load_routes_file",
    "parse_route",
    "redis_url_or_default",
]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# Where --encryption-key is read from when not given: keys separated by whitespace. The
# environment, not the command line, is where a secret belongs (argv is public in ps).
ENCRYPTION_KEYS_ENV = "DISTRIBUTED_ASGI_ENCRYPTION_KEYS"
MIN_ENCRYPTION_KEY_LENGTH = 32

# A key template expands to a channel name; a backreference makes it depend on the request.
_BACKREFERENCE = re.compile(r"\\(\d+|g<[^>]*>)")
_KEY = re.compile(r"^[a-zA-Z\d\-_.]+$")


class ConfigError(Exception):
    """Bad configuration; the message names the bad value."""


def parse_route(value: str) -> tuple[str, str]:
    """``REGEX=KEY`` -> ``(regex, key template)``.

    Split at the last ``=``: a regex may contain ``=`` (``(?=...)``, ``?a=b``) but a key template
    cannot, since channel names are letters, digits, ``-_.`` and backreferences.
    """
    regex, sep, key = value.rpartition("=")
    if not sep or not regex or not key:
        raise ConfigError(f"invalid route {value!r}: expected REGEX=KEY, e.g. '/api/(.*)=api'")
    try:
        re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"invalid route {regex!r}: {exc}") from None
    return regex, key


def load_routes_file(path: str) -> list[tuple[str, str]]:
    """Routes from a JSON or TOML file holding a mapping ``{regex: key}``, in file order.

    The mapping may be the whole document or its ``routes`` table.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read routes file {path!r}: {exc.strerror}") from None
    data: Any
    try:
        data = _parse_toml(text) if file.suffix.lower() == ".toml" else json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError both are
        raise ConfigError(f"invalid routes file {path!r}: {exc}") from None
    if isinstance(data, Mapping) and isinstance(data.get("routes"), Mapping):
        data = data["routes"]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"invalid routes file {path!r}: expected a non-empty mapping of regex to key"
        )
    routes = []
    for regex, key in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"invalid route {regex!r} in {path!r}: key must be a string")
        routes.append(parse_route(f"{regex}={key}"))
    return routes


def _parse_toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise ConfigError("TOML routes files need Python 3.11 or 'tomli'") from None
    return tomllib.loads(text)


def check_routes(routes: Sequence[tuple[str, str]]) -> None:
    """Let the route table itself reject anything else (unknown groups, bad channel names)."""
    from distributed_asgi.core.routing import RouteTable

    if not routes:
        raise ConfigError("no routes: give at least one --route REGEX=KEY or --routes FILE")
    try:
        RouteTable(list(routes))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def literal_keys(routes: Iterable[tuple[str, str]]) -> list[str]:
    """The keys of routes whose template has no backreference, in order, without repeats."""
    keys: list[str] = []
    for _, key in routes:
        if not _BACKREFERENCE.search(key) and key not in keys:
            keys.append(key)
    return keys


def check_key(key: str) -> str:
    """A key workers listen on: a normal channel name (no ``!``), as routes produce."""
    if not _KEY.match(key) or len(key) >= 100:
        raise ConfigError(
            f"invalid key {key!r}: use ASCII letters, digits, '-', '_' or '.', "
            "fewer than 100 characters"
        )
    return key


def check_key_limits(values: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """``--key KEY`` or ``--key KEY:LIMIT`` values -> the keys in order, and their limits.

    A key cannot contain ``:``, so the limit is what follows the last one. A key given twice
    must not be given two limits.
    """
    keys: list[str] = []
    limits: dict[str, int] = {}
    for value in values:
        key, sep, text = value.rpartition(":")
        if not sep:
            key, text = value, ""
        check_key(key)
        limit = None
        if sep:
            limit = int(text) if text.isascii() and text.isdigit() else 0
            if limit < 1:
                raise ConfigError(
                    f"invalid limit {text!r} for key {key!r}: expected a whole number >= 1, "
                    f"e.g. --key {key}:4"
                )
        if key in keys and limits.get(key) != limit:
            raise ConfigError(f"key {key!r} is given twice with different limits")
        if key not in keys:
            keys.append(key)
        if limit is not None:
            limits[key] = limit
    return keys, limits


def check_encryption_keys(keys: Sequence[str]) -> list[str]:
    """Keys for the layer's ``symmetric_encryption_keys``; errors name a key by position only.

    A key is a secret, so it never appears in an error. At least 32 characters, since the
    Fernet key is derived from it by one SHA-256 with no stretching; no whitespace, since
    ``$DISTRIBUTED_ASGI_ENCRYPTION_KEYS`` separates keys with it.
    """
    checked = []
    for number, key in enumerate(keys, start=1):
        if len(key) < MIN_ENCRYPTION_KEY_LENGTH:
            raise ConfigError(
                f"encryption key #{number} has {len(key)} characters; use at least "
                f"{MIN_ENCRYPTION_KEY_LENGTH}, e.g. from "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if any(c.isspace() for c in key):
            raise ConfigError(f"encryption key #{number} contains whitespace")
        checked.append(key)
    if checked and not import_module_quietly("cryptography"):
        raise ConfigError(
            "encryption keys need the cryptography package: pip install 'distributed-asgi[crypto]'"
        )
    return checked


def redis_url_or_default(url: str | None) -> str:
    return url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def check_redis_url(url: str) -> str:
    """Reject what the layer or redis-py would only reject at the first connection."""
    from distributed_asgi.layers.hosts import CLUSTER_SCHEMES, mask_secret, parse_hosts

    try:
        parse_hosts([url])
        if url.split("://", 1)[0] in CLUSTER_SCHEMES:
            # host:port,host:port is no netloc urlsplit can read a port from; parse_hosts has
            # already checked every node's host and port, and that the database is 0.
            return url
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
        if parts.scheme in ("redis", "rediss") and not parts.hostname:
            raise ValueError("no host name")
        db = parts.path.lstrip("/")
        if parts.scheme != "unix" and db and not db.isdigit():
            raise ValueError(f"database must be a number, got {db!r}")
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {mask_secret(url)!r}: {exc}") from None
    return url


def check_redis_urls(urls: Sequence[str]) -> list[str]:
    """Several ``--redis`` URLs: each checked, then as one ``hosts`` list (client-side sharding).

    The list as a whole may be wrong where no single URL is: the same server twice, or a
    Redis Cluster beside other entries (a cluster shards by itself).
    """
    from distributed_asgi.layers.hosts import parse_hosts

    checked = [check_redis_url(url) for url in urls]
    try:
        parse_hosts(checked)
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URLs: {exc}") from None
    return checked


def load_app(
    import_string: str, *, app_dir: str = ".", factory: bool = False, interface: str = "auto"
) -> Callable[..., Any]:
    """Import ``module:attribute`` as uvicorn does, and return an ASGI 3 callable.

    ``interface`` is ``auto`` (told apart as uvicorn does, see interface.py), ``asgi3`` or
    ``asgi2`` (``app(scope)`` returns an instance awaited with ``(receive, send)``); an ASGI 2
    app comes back wrapped in ``ASGI2App``, which the Node recognises (its scopes say 2.0).
    """
    from uvicorn.importer import ImportFromStringError, import_from_string

    from distributed_asgi.node.interface import as_asgi3

    if app_dir:
        sys.path.insert(0, os.path.abspath(app_dir))
    try:
        app = import_from_string(import_string)
    except ImportFromStringError as exc:
        raise ConfigError(str(exc)) from None
    if factory:
        try:
            app = app()
        except TypeError as exc:
            raise ConfigError(f"Error loading ASGI app factory: {exc}") from None
    if not callable(app):
        raise ConfigError(f"ASGI app {import_string!r} is not callable: {app!r}")
    try:
        return as_asgi3(app, interface)[0]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def import_module_quietly(name: str) -> bool:
    """True when ``name`` is importable (for optional extras such as uvloop)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
