"""Several runs' learning curves on one picture: loss and accuracy per epoch, one colour per run,
training solid and validation dashed (`cnnlab compare --out`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from cnnlab.errors import CnnlabError
from cnnlab.visualize._common import figure
from cnnlab.visualize.history import PANELS, epoch_numbers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnlab.visualize.history import History

LINE_STYLES: tuple[tuple[str, str, Literal["-", "--"]], ...] = (
    ("", "training", "-"),
    ("val_", "validation", "--"),
)
MAX_EPOCHS_WITH_MARKERS = 30


def plot_comparison(histories: Sequence[tuple[str, History]]) -> Figure:
    """Loss and accuracy per epoch of each (label, history.csv rows) pair, overlaid: one
    colour per run, training solid, validation dashed. A run with no epochs yet is named in
    the legend as such."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if not histories:
        raise CnnlabError("nothing to compare: no runs given")
    colours = [f"C{i % 10}" for i in range(len(histories))]  # matplotlib's default cycle
    fig = figure()
    fig.set_size_inches(11, 4.6)
    fig.suptitle(f"{len(histories)} runs compared")
    axes = fig.subplots(1, len(PANELS))
    for ax, metric in zip(axes, PANELS, strict=True):
        for (_, history), colour in zip(histories, colours, strict=True):
            if not history:
                continue
            epochs = epoch_numbers(history)
            marker = "o" if len(epochs) <= MAX_EPOCHS_WITH_MARKERS else None
            for prefix, _, style in LINE_STYLES:
                column = prefix + metric
                if any(column in row for row in history):
                    values = [row.get(column, math.nan) for row in history]
                    ax.plot(epochs, values, color=colour, linestyle=style, marker=marker, ms=3)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [
        Line2D([], [], color=colour, label=label if history else f"{label} (no epochs yet)")
        for (label, history), colour in zip(histories, colours, strict=True)
    ]
    handles += [Line2D([], [], color="black", linestyle=s, label=n) for _, n, s in LINE_STYLES]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig
