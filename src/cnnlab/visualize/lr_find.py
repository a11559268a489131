"""The learning-rate range test's curve: loss against learning rate, the suggestion marked.

`cnnlab lr-find` draws it (the range test is `cnnlab.training.lr_find`); each step's loss faint, its
smoothed value (what the test decides on) bold, the rate axis logarithmic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class RangeTest(Protocol):
    """What the plot reads of a range test (`cnnlab.training.lr_find.LrFindResult`; named here
    by its shape, so that pictures never import the training stage)."""

    @property
    def rates(self) -> Sequence[float]: ...
    @property
    def losses(self) -> Sequence[float]: ...
    @property
    def smoothed(self) -> Sequence[float]: ...
    @property
    def suggestion(self) -> float: ...
    @property
    def stopped_early(self) -> bool: ...
    @property
    def minimum_rate(self) -> float: ...


SUGGESTION_COLOUR = "tab:green"
MINIMUM_COLOUR = "tab:gray"


def plot_lr_find(result: RangeTest) -> Figure:
    """Loss per step against its learning rate (log axis), raw and smoothed, with the
    smoothed minimum and the suggested rate (the minimum's rate / 10) marked."""
    fig = figure()
    fig.set_size_inches(7, 4.2)
    ax = fig.subplots()
    steps = len(result.rates)
    ending = "stopped early: the loss diverged" if result.stopped_early else "all rates tested"
    ax.set_title(f"Learning-rate range test ({steps} steps, {ending})")
    ax.plot(result.rates, result.losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
    ax.plot(result.rates, result.smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        # The diverged tail can be orders of magnitude up: show the curve up to a little above
        # the divergence threshold, or the start, whichever is higher.
        low, top = min(finite), max(finite[0], 4 * min(finite))
        ax.set_ylim(max(0.0, low - 0.1 * (top - low)), top * 1.05)
    ax.axvline(result.minimum_rate, color=MINIMUM_COLOUR, linestyle=":", linewidth=1)
    ax.axvline(result.suggestion, color=SUGGESTION_COLOUR, linestyle="--", linewidth=1.5)
    ax.annotate(
        f"suggested {result.suggestion:.2g}\n(minimum at {result.minimum_rate:.2g}, / 10)",
        xy=(result.suggestion, 0.95),
        xycoords=("data", "axes fraction"),
        xytext=(6, 0),
        textcoords="offset points",
        va="top",
        color=SUGGESTION_COLOUR,
    )
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return fig
