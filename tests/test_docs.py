"""The documentation keeps up with the code.

- docs/configuration.md lists every parameter of the public classes (``inspect.signature``) and
  every option of every command (click's own ``params``), each with its real default, and
  nothing that no longer exists.

(Links between the pages are checked by test_doc_links.py.)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from distributed_asgi import Distributor, Node, create_path_distributor
from distributed_asgi.layers import RedisChannelLayer, RedisLocalChannelLayer
from distributed_asgi.ops.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    assert heading in lines, f"docs/configuration.md has no heading {heading!r}"
    start = lines.index(heading) + 1
    level = len(heading) - len(heading.lstrip("#"))
    end = len(lines)
    for number in range(start, len(lines)):
        hashes = len(lines[number]) - len(lines[number].lstrip("#"))
        if 0 < hashes <= level and lines[number][hashes : hashes + 1] == " ":
            end = number
            break
    return "\n".join(lines[start:end])


def table(text: str) -> dict[str, list[str]]:
    """Option name -> the cells of its table row; a first cell may name several (`-a`, `-b`)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            rows[name.split(" ")[0]] = cells  # "--route REGEX=KEY" -> "--route"
    return rows


def test_helpers_read_a_table() -> None:
    text = (
        "## A\n| option | default |\n|---|---|\n| `--a X`, `--b` | `1` |\n### A.1\nx\n## B\n| `c` |"
    )
    assert table(section(text, "## A")) == {
        "--a": ["`--a X`, `--b`", "`1`"],
        "--b": [
            "`--a X`, `--b`",
            "`1`",
        ],
    }
    assert "c" not in table(section(text, "## A"))
    with pytest.raises(AssertionError):
        section(text, "## C")


PYTHON_API: list[tuple[str, Callable[..., Any]]] = [
    ("### `Distributor`", Distributor),
    ("### `create_path_distributor`", create_path_distributor),
    ("### `Node`", Node),
    # RedisChannelLayer.__new__ takes (*args, **kwargs) to pick the cluster class; the options
    # are __init__'s.
    ("### `RedisChannelLayer`", RedisChannelLayer.__init__),
    ("### `RedisLocalChannelLayer`", RedisLocalChannelLayer),
]


@pytest.mark.parametrize(("heading", "obj"), PYTHON_API, ids=[h for h, _ in PYTHON_API])
def test_every_python_option_is_documented_with_its_default(
    heading: str, obj: Callable[..., Any]
) -> None:
    rows = table(section(CONFIGURATION.read_text(), heading))
    names = []
    for parameter in inspect.signature(obj).parameters.values():
        if parameter.name == "self":
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            name = f"**{parameter.name}"
        else:
            name = parameter.name
        names.append(name)
        assert name in rows, f"{heading}: {name!r} is not documented in docs/configuration.md"
        default = rows[name][1]
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if parameter.default is inspect.Parameter.empty:
            assert default == "required", f"{heading} {name}: documented default {default!r}"
        else:
            assert default == f"`{parameter.default!r}`", (
                f"{heading} {name}: the code's default is {parameter.default!r}, "
                f"docs/configuration.md says {default}"
            )
    assert set(rows) == set(names), f"{heading}: documented but not in the code: " + ", ".join(
        sorted(set(rows) - set(names))
    )


def _literal_default(param: click.Parameter) -> str | None:
    """The default as the docs must show it, for plain values (not flags, None or unset)."""
    default = param.default
    if isinstance(default, bool) or not isinstance(default, (int, float, str)) or default == "":
        return None
    return str(default)


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_cli_option_is_documented_with_its_default(command: str) -> None:
    heading = f"### `distributed-asgi {command}`"
    rows = table(section(CONFIGURATION.read_text(), heading))
    documented: set[str] = set()
    for param in main.commands[command].params:
        if isinstance(param, click.Argument):
            names = [str(param.name).upper()]
        else:
            names = [*param.opts, *param.secondary_opts]
        documented.update(names)
        for name in names:
            assert name in rows, f"{command}: {name} is not documented in docs/configuration.md"
        default = rows[names[0]][1]
        if param.required:
            assert default == "required", f"{command} {names[0]}: required, docs say {default}"
        literal = _literal_default(param)
        if literal is not None:
            assert f"`{literal}`" in default, (
                f"{command} {names[0]}: the default is {literal!r}, docs/configuration.md says "
                f"{default!r}"
            )
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            assert f"${envvar}" in default, f"{command} {names[0]}: ${envvar} not mentioned"
    stale = set(rows) - documented
    assert not stale, f"{command}: documented but not an option any more: {sorted(stale)}"


def test_a_new_option_would_fail_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = click.Option(["--brand-new-option"], default=7)
    monkeypatch.setattr(main.commands["edge"], "params", [*main.commands["edge"].params, extra])
    with pytest.raises(AssertionError, match="--brand-new-option is not documented"):
        test_every_cli_option_is_documented_with_its_default("edge")
