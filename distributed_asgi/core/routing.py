"""The route table: request path -> channel name. Pure, no I/O.

Routes are tried in the order given; the first whose regex is found anywhere in the path
(``re.search``) wins, and its key template is expanded with the match (``\\1``, ``\\g<name>``),
exactly as ``re.Match.expand`` does. Every mistake that can be found without a request is an
error here, at construction, naming the route: an invalid regex, a template naming a group the
regex does not have, or a template that can never expand to a valid channel name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from distributed_asgi.core.names import MAX_NAME_LENGTH, ROUTE_KEY

__all__ = ["Route", "RouteTable"]

# The literal text a template keeps once its group references are taken out.
_GROUP_REFERENCE = re.compile(r"\\(?:g<[^>]*>|[1-9]\d?)")


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    template: str
    # The template split into literal text (str) and group references (int or group name in
    # a 1-tuple), so a request expands it without re-parsing (``Match.expand`` parses the
    # template on every call).
    parts: tuple[str | tuple[int | str], ...]

    @property
    def describe(self) -> str:
        return f"route {self.pattern.pattern!r} -> {self.template!r}"

    def key_for(self, found: re.Match[str]) -> str | None:
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return self.parts[0]  # no group references: checked at construction
        key = "".join(
            part if isinstance(part, str) else (found.group(part[0]) or "") for part in self.parts
        )
        # Group text comes from the client: it may contain anything the regex allows.
        if ROUTE_KEY.match(key) and len(key) < MAX_NAME_LENGTH:
            return key
        return None


class RouteTable:
    """An ordered table of ``(regex, key template)`` routes.

    >>> RouteTable({"/api/([a-z-]+)": r"API-\\1"}).match("/api/test/38")
    'API-test'
    """

    def __init__(self, routes: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        pairs = list(routes.items()) if isinstance(routes, Mapping) else list(routes)
        if not pairs:
            raise ValueError("routes must name at least one route")
        self.routes = tuple(_compile(entry) for entry in pairs)

    def match(self, path: str) -> str | None:
        """The channel for ``path``, or None when no route matches it."""
        for route in self.routes:
            found = route.pattern.search(path)
            if found is not None:
                return route.key_for(found)
        return None

    def __len__(self) -> int:
        return len(self.routes)

    def __repr__(self) -> str:
        inner = ", ".join(f"{r.pattern.pattern!r}: {r.template!r}" for r in self.routes)
        return f"RouteTable({{{inner}}})"


def _compile(entry: object) -> Route:
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        raise ValueError(f"a route must be a (regex, key template) pair, got {entry!r}")
    regex, template = entry
    if not isinstance(regex, str) or not isinstance(template, str):
        raise ValueError(f"route {regex!r} -> {template!r}: regex and template must be strings")
    where = f"route {regex!r} -> {template!r}"
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"{where}: invalid regular expression: {exc}") from None
    _check_groups(pattern, template, where)
    # Group text is only known per request (and is checked then); the literal rest must be
    # channel-name characters, or no request could ever produce a valid name.
    sample = _GROUP_REFERENCE.sub("x", template)
    if not ROUTE_KEY.match(sample):
        raise ValueError(
            f"{where}: the key template can never be a valid channel name (ASCII letters, "
            "digits, hyphens, underscores and periods only)"
        )
    if len(_GROUP_REFERENCE.sub("", template)) >= MAX_NAME_LENGTH:
        raise ValueError(
            f"{where}: the key template is longer than a channel name may be "
            f"({MAX_NAME_LENGTH - 1} characters)"
        )
    return Route(pattern, template, _split_template(template))


def _split_template(template: str) -> tuple[str | tuple[int | str], ...]:
    parts: list[str | tuple[int | str]] = []
    at = 0
    for reference in _GROUP_REFERENCE.finditer(template):
        if reference.start() > at:
            parts.append(template[at : reference.start()])
        text = reference.group()
        name = text[3:-1] if text.startswith("\\g<") else text[1:]
        parts.append((int(name),) if name.isdigit() else (name,))
        at = reference.end()
    if at < len(template) or not parts:
        parts.append(template[at:])
    return tuple(parts)


def _check_groups(pattern: re.Pattern[str], template: str, where: str) -> None:
    for reference in _GROUP_REFERENCE.findall(template):
        name = reference[3:-1] if reference.startswith("\\g<") else reference[1:]
        if name.isdigit():
            if int(name) > pattern.groups:
                raise ValueError(
                    f"{where}: the key template refers to group {name}, but the regex has "
                    f"{pattern.groups} group(s)"
                )
        elif name not in pattern.groupindex:
            raise ValueError(
                f"{where}: the key template refers to group {name!r}, which the regex "
                "does not define"
            )
