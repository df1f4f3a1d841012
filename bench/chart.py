"""PNG charts beside the tables of docs/benchmarks.md: people would rather look than read.

A chart is a grid of panels (at most ``MAX_COLUMNS`` a row), one per measured quantity (their
units differ, so they do not share an axis); each panel has one bar per setup, labelled with its
value. The functions take figures already measured, so a test can draw from sample data and a
run draws from its own medians.

matplotlib is in the ``bench`` extra (and ``dev``, for the test); it is imported only here, with
the Agg backend, so nothing needs a display.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .report import ROOT

__all__ = [
    "IMG_DIR",
    "MAX_COLUMNS",
    "Panel",
    "chart_path",
    "draw",
    "image_markdown",
    "matplotlib_available",
    "record",
]

IMG_DIR = ROOT / "docs" / "img"
# One colour per setup, the same in every chart: ours (or the gateway) first.
COLOURS = ["#1f6feb", "#d9822b", "#8a8f98", "#2da44e", "#a371f7", "#cf222e"]
MAX_COLUMNS = 5  # panels a row; more go on the next row, so a wide table stays readable


@dataclass
class Panel:
    """One quantity: ``values`` maps a setup (bar) to its figure; None when it was not measured."""

    title: str
    unit: str
    values: Mapping[str, float | None]
    higher_is_better: bool = True


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def chart_path(section: str, write: bool) -> Path:
    """docs/img/SECTION.png for a recorded run; a temporary file otherwise (--no-write, --quick),
    so a smoke run still draws its chart without touching the docs."""
    folder = IMG_DIR if write else Path(tempfile.gettempdir()) / "distributed-asgi-bench"
    return folder / f"{section}.png"


def image_markdown(section: str, alt: str) -> str:
    """The link docs/benchmarks.md puts above a section's table (relative to docs/)."""
    return f"![{alt}](img/{section}.png)"


def _label(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def draw(title: str, panels: Sequence[Panel], path: Path, *, note: str = "") -> Path:
    """Draw ``panels`` side by side under ``title`` into the PNG at ``path``; return ``path``."""
    if not panels:
        raise ValueError("a chart needs at least one panel")
    import matplotlib

    matplotlib.use("Agg")  # no display; also keeps a test from opening windows
    import matplotlib.pyplot as plt

    setups: list[str] = []
    for panel in panels:
        setups += [name for name in panel.values if name not in setups]
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(setups)}

    rows = -(-len(panels) // MAX_COLUMNS)
    columns = -(-len(panels) // rows)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns + 0.6, 3.6 * rows), dpi=110, squeeze=False
    )
    axes_list = [ax for row in axes for ax in row]
    for spare in axes_list[len(panels) :]:
        spare.set_visible(False)
    axes_list = axes_list[: len(panels)]
    try:
        for ax, panel in zip(axes_list, panels, strict=True):
            names = list(panel.values)
            heights = [panel.values[name] or 0.0 for name in names]
            bars = ax.bar(names, heights, color=[colour[name] for name in names], width=0.6)
            for bar, name in zip(bars, names, strict=True):
                value = panel.values[name]
                text = "not measured" if value is None else _label(value)
                ax.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
            better = "higher is better" if panel.higher_is_better else "lower is better"
            ax.set_title(f"{panel.title}\n({better})", fontsize=9)
            ax.set_ylabel(panel.unit, fontsize=8)
            ax.tick_params(labelsize=8)
            # Head room for the value labels above the tallest bar.
            ax.set_ylim(0, max([*heights, 1e-9]) * 1.18)
            ax.spines[["top", "right"]].set_visible(False)
        figure.suptitle(title, fontsize=10)
        if note:
            figure.text(0.5, 0.01, note, ha="center", fontsize=7, color="#555555")
        figure.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path


def record(
    section: str, title: str, panels: Sequence[Panel], *, write: bool, alt: str, note: str = ""
) -> str | None:
    """Draw a section's chart; return the markdown link to put in the section when ``write``.

    A chart that cannot be drawn (no matplotlib, or a plotting error) is reported and skipped:
    it must never cost a run its recorded figures.
    """
    if not matplotlib_available():
        print("   chart: skipped, matplotlib is not installed (pip install -e '.[bench]')")
        return None
    try:
        path = draw(title, panels, chart_path(section, write), note=note)
    except Exception as exc:
        print(f"   chart: not drawn: {type(exc).__name__}: {exc}")
        return None
    print(f"   chart: {path}")
    return image_markdown(section, alt) if write else None
