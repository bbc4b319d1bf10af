"""Plots for people who would rather look than read: the ROC curves of ``pixelmodels ood`` and a run's
learning curve (``scripts/learning_curve.py``), drawn with matplotlib (the optional extra ``plot``).

matplotlib is imported inside the functions, so the rest of the application runs without it, and only
through its object API (``Figure`` on the Agg canvas): no ``pyplot``, no ``matplotlib.use``, nothing
process-wide. Each function writes a PNG atomically (``checkpoint.atomic_write``) and returns the
``Figure``, whose lines hold the plotted data.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pixelmodels.checkpoint import atomic_write
from pixelmodels.errors import PixelModelsError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
PANEL = 4.4  # inches: the side of one square ROC panel, with its labels
LEGEND_ROW = 0.2  # inches: a line of an ROC panel's legend
CURVE_SIZE = (6.4, 4.0)  # inches: a learning curve, 640x400 pixels at DPI


def new_figure(what: str, size: tuple[float, float]) -> Figure:
    """An empty ``Figure`` of ``size`` inches on the Agg canvas, laid out by matplotlib's constrained layout.

    Raises:
        PixelModelsError: matplotlib is not installed; the message names ``what`` needs it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PixelModelsError(f"{what} needs matplotlib, which is not installed; install it with "
                               "pip install 'pixelmodels[plot]'") from None
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str | Path, tight: bool = False) -> None:
    """Write ``figure`` as a PNG at ``path`` atomically, making missing folders; ``tight``: cropped to what
    is drawn (with a small margin) instead of the figure's size."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, **({"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}))
    atomic_write(path, buffer.getvalue())


def draw_roc(path: str | Path, curves: dict[str, dict[str, tuple]], title: str | None = None) -> Figure:
    """Draw ROC curves into a PNG at ``path``: one square panel per score, side by side, one line per OOD
    set (the same colour in every panel) labelled with its AUROC in the legend below the panel, and the
    chance diagonal.

    Args:
        curves: score name -> OOD set name -> (fpr, tpr, auroc): the false and true positive rates
            (1-D arrays of the same length, as ``sklearn.metrics.roc_curve`` returns them) and the area.
        title: above all panels, when given.

    Returns:
        The figure: ``figure.axes[i]`` is the panel of the i-th score; its lines are the sets', then the diagonal.
    """
    sets = list(dict.fromkeys(s for by_set in curves.values() for s in by_set))
    n = max(len(curves), 1)
    height = PANEL + LEGEND_ROW * (len(sets) + 1) + (0.5 if title else 0)  # the legends below the panels
    figure = new_figure("the ROC plot", (PANEL * n, height))
    panels = figure.subplots(1, n, squeeze=False)[0]
    for ax, (score, by_set) in zip(panels, curves.items()):
        for name, (fpr, tpr, auroc) in by_set.items():
            # unclipped, above the frame: a perfect curve runs along the axes and stays visible
            ax.plot(np.asarray(fpr), np.asarray(tpr), color=f"C{sets.index(name) % 10}", linewidth=1.5,
                    label=f"{name} (AUROC {auroc:.3f})", clip_on=False, zorder=3)
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="_chance", zorder=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate", title=score)
        ax.set_aspect("equal", anchor="N")  # the spare height goes below the legend, where the PNG is cropped
        ax.grid(color="0.92")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize="small", frameon=False)
    if title:
        figure.suptitle(title)
    save(figure, path, tight=True)
    return figure


def draw_learning_curve(path: str | Path, points: list[tuple[int, float]], title: str,
                        goal: float | None = None) -> Figure:
    """Draw a learning curve into a PNG at ``path`` (640x400 pixels): test bits/dim against steps as a line
    with markers, and a dashed horizontal line at ``goal`` bits/dim when given.

    Args:
        points: (step, test bits/dim), in step order.

    Returns:
        The figure: its one axes holds the curve's line, then the goal's.
    """
    figure = new_figure("the learning curve", CURVE_SIZE)
    ax = figure.subplots()
    steps, bpd = zip(*points) if points else ((), ())
    ax.plot(steps, bpd, marker="o", markersize=4, color="C0", label="test bits/dim")
    if goal is not None:
        ax.axhline(goal, linestyle="--", color="C3", linewidth=1, label=f"goal {goal:g}")
        ax.legend(loc="upper right")
    ax.set(xlabel="steps", ylabel="test bits/dim", title=title)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter("{x:,.0f}")
    ax.grid(color="0.92")
    save(figure, path)
    return figure
