"""Tables, machine facts and the sections of docs/benchmarks.md; shared by every benchmark.

Each benchmark owns one section of the file, between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; writing a section replaces only that one and keeps the rest.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from distributed_asgi import native

__all__ = [
    "BENCHMARKS_MD",
    "ROOT",
    "git_revision",
    "load_average",
    "machine_facts",
    "markdown_table",
    "package_version",
    "plain_table",
    "replace_section",
]

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"

_FILE_HEADER = """# Benchmarks

Figures recorded by `make bench` (`python -m bench`). Each section is rewritten by its own
benchmark; the others are kept as they are.

- The HTTP figures need `wrk` on PATH (Debian/Ubuntu: `apt-get install wrk`).
"""


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """Aligned plain text; ``align`` has one ``l`` or ``r`` per column."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if a == "l" else cell.rjust(width)
            for cell, width, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    rule = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for a section's facts."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_facts() -> dict[str, str]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count() or "?"),
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def git_revision(path: str = "distributed_asgi") -> str:
    """Short commit of the work tree, whether ``path`` has uncommitted changes, and how the
    package runs (compiled by ``make compile``, or the plain sources)."""
    build = "compiled with mypyc" if native.compiled() else "plain Python"
    return f"{_commit(path)}, {build}"


def _commit(path: str) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", path],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"{commit} (with uncommitted changes in {path}/)" if dirty else commit


@contextlib.contextmanager
def checked_out(rev: str, *, compiled: bool = False) -> Iterator[Path]:
    """A temporary git worktree of ``rev`` (detached), removed afterwards: another revision
    to run side by side with this tree. ``compiled``: its per-request modules built as ``make
    compile`` builds this tree's (by its own compile_native.py), so two compiled builds compare;
    otherwise it runs plain, and a note says so when this tree runs compiled."""
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as scratch:
        tree = Path(scratch) / "tree"
        git = ["git", "worktree"]
        subprocess.run([*git, "add", "--detach", "--quiet", str(tree), rev], cwd=ROOT, check=True)
        try:
            if compiled:
                print(f"  compiling {rev}'s per-request modules (make compile)...", flush=True)
                subprocess.run(
                    [_compiler(), "compile_native.py"],
                    cwd=tree,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            elif native.compiled():
                print(
                    f"  note: this tree runs compiled and {rev} plain, so the ratios include"
                    " the compilation (--compiled builds both)",
                    flush=True,
                )
            yield tree
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], cwd=ROOT)


def _compiler() -> str:
    """The Python that has mypyc: the project's development environment (``make``'s .venv,
    this checkout's or, from a git worktree, its main checkout's), else this one; an error
    that says how to get one when none has it."""
    common = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    candidates = [ROOT / ".venv" / "bin" / "python"]
    if common:
        candidates.append(Path(common).parent / ".venv" / "bin" / "python")
    for python in [*(str(c) for c in candidates if c.exists()), sys.executable]:
        found = subprocess.run([python, "-c", "import mypyc"], capture_output=True)
        if found.returncode == 0:
            return python
    raise SystemExit(
        "--compiled needs mypyc: run `make .venv/.installed` (the development environment has "
        "it) or install mypy into this environment"
    )


def replace_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Put ``body`` between this section's markers, replacing the old one or appending."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else _FILE_HEADER
    head, found, rest = text.partition(start)
    if found:
        _, found_end, tail = rest.partition(end)
        if not found_end:
            raise ValueError(f"{path}: {start} has no matching {end}")
        tail = tail.lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
