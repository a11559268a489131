"""Reliability diagrams: how often the model is right at each confidence, before and after the
temperature `cnnlab evaluate` fitted (`cnnlab.calibration`).

A calibrated model's bars reach the diagonal: of the answers given with confidence 0.8, 80% are
right. A bar below the diagonal is over-confidence, above it under-confidence; the red part is
the gap, which the ECE averages (weighted by the share of images under each bar, drawn beneath).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cnnlab.calibration import Reliability
from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ACCURACY_COLOUR = "tab:blue"
GAP_COLOUR = "tab:red"


def plot_calibration(
    before: Reliability,
    after: Reliability | None = None,
    temperature: float | None = None,
) -> Figure:
    """The reliability diagram of the test set as the model answers (`before`), and beside it
    after dividing its logits by `temperature` (`after`; left out when None)."""
    panels: list[tuple[str, Reliability]] = [("as trained", before)]
    if after is not None:
        label = f"temperature {temperature:.3g}" if temperature is not None else "calibrated"
        panels.append((f"after {label}", after))
    fig = figure()
    fig.set_size_inches(5.0 * len(panels) + 0.5, 6.0)
    images = int(before.counts.sum())
    fig.suptitle(f"Reliability on the test set ({images:,} images, {len(before.counts)} bins)")
    grid = fig.add_gridspec(2, len(panels), height_ratios=[3, 1])
    for column, (title, table) in enumerate(panels):
        top = fig.add_subplot(grid[0, column])
        bottom = fig.add_subplot(grid[1, column], sharex=top)
        _draw_reliability(top, table, f"{title}: ECE {table.ece:.4f}")
        _draw_counts(bottom, table)
    return fig


def _draw_reliability(ax: Axes, table: Reliability, title: str) -> None:
    edges = table.edges
    width = np.diff(edges)
    filled = table.counts > 0
    left = edges[:-1][filled]
    accuracy = table.accuracy[filled]
    confidence = table.confidence[filled]
    ax.bar(
        left,
        accuracy,
        width=width[filled],
        align="edge",
        color=ACCURACY_COLOUR,
        edgecolor="black",
        linewidth=0.5,
        label="accuracy",
    )
    ax.bar(
        left,
        confidence - accuracy,
        bottom=accuracy,
        width=width[filled],
        align="edge",
        color=GAP_COLOUR,
        alpha=0.35,
        edgecolor=GAP_COLOUR,
        hatch="//",
        linewidth=0.5,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    ax.tick_params(labelbottom=False)


def _draw_counts(ax: Axes, table: Reliability) -> None:
    total = max(int(table.counts.sum()), 1)
    ax.bar(
        table.edges[:-1],
        table.counts / total,
        width=np.diff(table.edges),
        align="edge",
        color="gray",
        edgecolor="black",
        linewidth=0.5,
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (highest probability)")
    ax.set_ylabel("share of images")
