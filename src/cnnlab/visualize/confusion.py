"""Confusion matrices: which classes the model mistakes for which, as counts and as rates.

`confusion[i][j]` counts the test images of true class i predicted as class j, as
`cnnlab evaluate` writes it to `metrics.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cnnlab.errors import CnnlabError
from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CMAP = "Blues"
INCH_PER_CLASS = 0.55


def plot_confusion(confusion: ArrayLike, class_names: Sequence[str]) -> Figure:
    """Two panels: the confusion matrix as counts and row-normalised (recall on the diagonal)."""
    counts = _checked(confusion, class_names)
    rates = row_normalised(counts)
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else 0.0

    side = max(4.0, INCH_PER_CLASS * len(class_names) + 2.0)
    fig = figure()
    fig.set_size_inches(2 * side + 1.5, side)
    fig.suptitle(f"Confusion matrix: {total:,} images, accuracy {accuracy:.2%}")
    count_ax, rate_ax = fig.subplots(1, 2)
    _draw_matrix(count_ax, counts, class_names, "counts", "images", "{:,.0f}", vmax=None)
    _draw_matrix(
        rate_ax,
        rates,
        class_names,
        "row-normalised (recall on the diagonal)",
        "fraction of the true class",
        "{:.2f}",
        vmax=1.0,
    )
    return fig


def row_normalised(confusion: ArrayLike) -> NDArray[np.float64]:
    """Each row divided by its sum: the share of a true class given to each prediction."""
    counts = np.asarray(confusion, dtype=np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)


def most_confused(
    confusion: ArrayLike, class_names: Sequence[str], n: int = 5
) -> list[tuple[str, str, int]]:
    """The `n` largest off-diagonal cells as (true class, predicted class, count), largest first."""
    counts = _checked(confusion, class_names)
    off_diagonal = [
        (int(counts[true, pred]), true, pred)
        for true in range(len(class_names))
        for pred in range(len(class_names))
        if true != pred and counts[true, pred] > 0
    ]
    off_diagonal.sort(key=lambda cell: -cell[0])  # stable: ties keep row-major order
    return [(class_names[true], class_names[pred], count) for count, true, pred in off_diagonal[:n]]


def format_most_confused(pairs: Sequence[tuple[str, str, int]]) -> str:
    """One line per pair, `true -> predicted: count`, for a terminal or a report."""
    if not pairs:
        return "no class was mistaken for another"
    return "\n".join(f"{true} -> {pred}: {count:,}" for true, pred, count in pairs)


def _draw_matrix(
    ax: Axes,
    values: NDArray[Any],
    class_names: Sequence[str],
    title: str,
    colour_label: str,
    fmt: str,
    vmax: float | None,
) -> None:
    """A matrix as a heat map with its value in each cell and a labelled colour bar."""
    image = ax.imshow(values, cmap=CMAP, vmin=0, vmax=vmax)
    colour_bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colour_bar.set_label(colour_label)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)

    # Dark text on light cells, light text on dark ones.
    threshold = (values.max() if vmax is None else vmax) / 2
    fontsize = max(5.0, min(10.0, 90 / len(class_names)))
    for (row, col), value in np.ndenumerate(values):
        colour = "white" if value > threshold else "black"
        ax.text(col, row, fmt.format(value), ha="center", va="center", color=colour, size=fontsize)


def _checked(confusion: ArrayLike, class_names: Sequence[str]) -> NDArray[np.int64]:
    """The matrix as integers, after checking it is square with one row per class name."""
    counts = np.asarray(confusion)
    n = len(class_names)
    if counts.shape != (n, n):
        raise CnnlabError(
            f"confusion matrix has shape {counts.shape} but there are {n} class names; "
            "pass the matrix and class names of the same evaluation (metrics.json)"
        )
    if counts.size and (counts.min() < 0 or not np.all(np.isfinite(counts))):
        raise CnnlabError("confusion matrix has negative or non-finite counts; re-run evaluate")
    return counts.astype(np.int64)
