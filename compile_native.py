"""Compile the gateway's per-request modules with mypyc, in place: ``make compile``.

The modules stay plain Python: mypyc turns each into a C extension beside its ``.py`` (Python
imports the extension first), which runs the same code at less cost per call
(docs/benchmarks.md). ``python compile_native.py`` builds them when a source is newer than its
extension; ``--clean`` removes them (the ``.py`` files run again), as does setting
``DISTRIBUTED_ASGI_COMPILE=0``; without a C compiler or Python's headers nothing is built.
``--list`` names them.

What is compiled is what keeps its meaning compiled. Left out:

- Modules that await inside an ``except`` or ``finally`` block (or an ``async with``): a
  compiled coroutine keeps the exception it handles in the thread, not in itself, so while it
  waits there every other task sees that exception as its own (mypyc 2.4: a bare ``raise``
  elsewhere re-raises it, and any new exception gets it as ``__context__``, one chain through
  every request). Found by reading each module (``_awaits_while_handling``), so a module that
  starts doing it drops out by itself.
- Modules that take the user's configuration (edge/distributor.py, edge/settings.py,
  edge/retry.py, layers/build.py, layers/hosts.py, node/event_loop.py): a compiled function
  converts a value to its parameter's type before the check that would name it (``True``
  becomes ``1``).
- Exception classes with two built-in bases (layers/errors.py, layers/base.py,
  node/lifespan.py); classes whose attributes are read through the class (layers/options.py
  and the layers built on it: redis.py, local.py, memory.py, cluster.py; node/interface.py);
  classes meant to be subclassed (layers/serialization.py: a compiled class cannot have a
  Python subclass, and its work is msgpack's, in C already).
- The package ``__init__`` files (they only re-export) and native.py (it checks the build).

What compiled code trusts that Python does not: the types mypy infers, narrowing included. A
loop under ``while self.x is None:`` has ``self.x`` as None in its body, and compiled code
checks that on every read, so once another task set it during a wait the read raises
``TypeError``. A condition that another task can change during the body's waits is asked
through a method (edge/connection.py ``_stopped``).
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGES = ["distributed_asgi", "distributed_asgi/core", "distributed_asgi/layers",
            "distributed_asgi/node", "distributed_asgi/edge"]  # fmt: skip
LEFT_OUT = {
    "distributed_asgi/__main__.py",
    "distributed_asgi/edge/distributor.py",
    "distributed_asgi/edge/retry.py",
    "distributed_asgi/edge/settings.py",
    "distributed_asgi/layers/base.py",
    "distributed_asgi/layers/build.py",
    "distributed_asgi/layers/cluster.py",
    "distributed_asgi/layers/errors.py",
    "distributed_asgi/layers/hosts.py",
    "distributed_asgi/layers/local.py",
    "distributed_asgi/layers/memory.py",
    "distributed_asgi/layers/options.py",
    "distributed_asgi/layers/redis.py",
    "distributed_asgi/layers/serialization.py",
    "distributed_asgi/native.py",
    "distributed_asgi/node/interface.py",
    "distributed_asgi/node/event_loop.py",
    "distributed_asgi/node/lifespan.py",
}
_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def compiled_sources() -> list[str]:
    """The modules ``make compile`` builds, as paths from the project root."""
    found = [
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in sorted((ROOT / package).glob("*.py"))
    ]
    listed = [p for p in found if p not in LEFT_OUT and not p.endswith("/__init__.py")]
    return [p for p in listed if not _awaits_while_handling(ROOT / p)]


_TRY = (ast.Try, *(t for t in [getattr(ast, "TryStar", None)] if t is not None))


def _awaits_while_handling(path: Path) -> bool:
    """Whether the module awaits inside an ``except`` or ``finally`` block (or under an
    ``async with``, which is one): such modules run as they are (see the module's text)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith):
            return True
        if isinstance(node, _TRY):
            blocks = [handler.body for handler in node.handlers] + [node.finalbody]
            for statement in (s for block in blocks for s in block):
                if any(isinstance(n, ast.Await | ast.AsyncFor) for n in ast.walk(statement)):
                    return True
    return False


def narrowed_across_waits(path: Path) -> list[int]:
    """Lines of the module that read ``self.<name>`` after a wait, where a condition before
    the wait narrowed it (``is None``, ``is not None``, ``isinstance``, truthiness): in the
    condition's block, or after an ``if`` whose block leaves. Compiled code checks every such
    read against the narrowed type, and another task may have changed the attribute during
    the wait (the module's text says more): the code must ask again, through a call."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While) and not _is(node.test, ast.Or):
            found.update(_read_after_wait(node.body, _narrowed(node.test)))
        for block in (getattr(node, field, None) for field in ("body", "orelse", "finalbody")):
            if not isinstance(block, list):
                continue
            for index, statement in enumerate(block):
                if isinstance(statement, ast.If) and not statement.orelse and statement.body:
                    # What follows has the condition's negation: of an ``and``, nothing sure.
                    leaves = isinstance(statement.body[-1], ast.Return | ast.Raise | ast.Continue)
                    if leaves and not _is(statement.test, ast.And):
                        names = _narrowed(statement.test)
                        found.update(_read_after_wait(block[index + 1 :], names))
    return sorted(found)


def _is(test: ast.expr, operator: type[ast.boolop]) -> bool:
    return isinstance(test, ast.BoolOp) and isinstance(test.op, operator)


def _narrowed(test: ast.expr) -> set[str]:
    """The ``self`` attributes a condition narrows."""
    names: set[str] = set()
    for node in ast.walk(test):
        if isinstance(node, ast.Compare) and any(
            isinstance(o, ast.Is | ast.IsNot) for o in node.ops
        ):
            names.update(_self_attribute(node.left))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            if node.func.id == "isinstance":
                names.update(_self_attribute(node.args[0]))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            names.update(_self_attribute(node.operand))
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                names.update(_self_attribute(value))
    names.update(_self_attribute(test))
    return names


def _self_attribute(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return {node.attr} if node.value.id == "self" else set()
    return set()


def _read_after_wait(statements: list[ast.stmt], names: set[str]) -> list[int]:
    """Lines in ``statements`` reading one of ``names`` after the first wait ends (an
    assignment to it before the read makes it safe: the narrowing is then the value's)."""
    if not names:
        return []
    nodes = sorted(
        (n for s in statements for n in ast.walk(s) if isinstance(n, ast.Await | ast.Attribute)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    waited_until: tuple[int, int] | None = None
    assigned: set[str] = set()
    lines = []
    for node in nodes:
        if isinstance(node, ast.Await):
            end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
            waited_until = end if waited_until is None else min(waited_until, end)
            continue
        name = next(iter(_self_attribute(node)), None)
        if name not in names:
            continue
        if isinstance(node.ctx, ast.Store):
            assigned.add(name)
        elif waited_until is not None and (node.lineno, node.col_offset) >= waited_until:
            lines += [node.lineno] if name not in assigned else []
    return lines


def _extension(source: str) -> Path:
    return (ROOT / source).with_suffix(_SUFFIX)


def clean() -> None:
    """Remove every extension in the package (it has no others), listed now or before."""
    for extension in (ROOT / "distributed_asgi").rglob("*" + _SUFFIX):
        extension.unlink()


def up_to_date() -> bool:
    """Every listed module has an extension newer than its source and than this script, and
    no other module has one (left out since its build, it would still run compiled)."""
    shared = ROOT / ("distributed_asgi/_native__mypyc" + _SUFFIX)
    if not shared.exists():
        return False
    expected = {_extension(source) for source in compiled_sources()} | {shared}
    if set((ROOT / "distributed_asgi").rglob("*" + _SUFFIX)) - expected:
        return False
    oldest = Path(__file__).stat().st_mtime
    for source in compiled_sources():
        extension = _extension(source)
        if not extension.exists():
            return False
        if extension.stat().st_mtime < max(oldest, (ROOT / source).stat().st_mtime):
            return False
    return True


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    setup(
        name="distributed-asgi-native",
        py_modules=[],
        ext_modules=mypycify(
            compiled_sources(),
            opt_level="3",
            # Inside the package: found wherever the package is, as every compiled module is.
            group_name="distributed_asgi._native",
        ),
        script_args=["build_ext", "--inplace", "--build-temp", "build/native"],
    )
    # A module's own extension is a shim that loads the shared one, and the copy keeps the
    # time it was first linked at: stamped now, so its age says when its code was built.
    for extension in (ROOT / "distributed_asgi").rglob("*" + _SUFFIX):
        os.utime(extension)


def main(argv: list[str]) -> int:
    if argv == ["--list"]:
        print("\n".join(compiled_sources()))
    elif argv == ["--clean"] or os.environ.get("DISTRIBUTED_ASGI_COMPILE") == "0":
        clean()
        print("compile: the modules run as plain Python (no extensions)")
    elif shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is None:
        clean()
        print("compile: no C compiler found; the modules run as plain Python")
    elif not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        clean()
        print("compile: no Python headers (python3-dev); the modules run as plain Python")
    elif up_to_date():
        print("compile: the compiled modules are up to date")
    else:
        clean()  # a module left out since, or renamed, must not keep running its old build
        build()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
