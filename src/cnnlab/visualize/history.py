"""Learning curves: loss and accuracy per epoch, training against validation, best epoch marked.

The rows are those of a run's `history.csv` (`cnnlab.runs.Run.history`): Keras' 0-based
`epoch` column plus one column per metric. Epochs are shown 1-based, as Keras' progress bar and
`run.json`'s `best_epoch` count them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError, RunError
from cnnlab.monitoring import best_row, lower_is_better, recorded_monitor
from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from cnnlab.runs import Run

History = Sequence[dict[str, float]]

PANELS = ("loss", "accuracy")
BEST_COLOUR = "tab:green"
MAX_EPOCHS_WITH_MARKERS = 30
MAX_EPOCH_TICKS = 10


def best_epoch(history: History, monitor: str = "val_accuracy") -> int | None:
    """The 1-based epoch training keeps by `monitor` (`cnnlab.monitoring.best_row`: the best
    value, ties to the lowest validation loss), as run.json's `best_epoch` names it.

    None when no epoch recorded `monitor` (e.g. `val_accuracy` for a run without validation).
    """
    row = best_row(history, monitor)
    if row is None:
        return None
    return epoch_numbers(history)[next(i for i, r in enumerate(history) if r is row)]


def epoch_numbers(history: History) -> list[int]:
    """1-based epoch numbers of the rows (from their `epoch` column, else their position)."""
    return [
        int(row["epoch"]) + 1 if "epoch" in row else position
        for position, row in enumerate(history, start=1)
    ]


def plot_run_history(run: Run) -> Figure:
    """A run's history.csv plotted with the epoch its run.json names as best (the seed recipe
    keeps its last), or, before run.json knows, the one its config.toml's monitor picks;
    RunError for a run without history. `cnnlab visualize history` and the server's history
    picture both draw it here."""
    history = run.history()
    if not history:
        raise RunError(f"{run.dir}: no training history (history.csv) yet; train the run first")
    best = run.state().best_epoch if run.state_file.is_file() else None
    return plot_history(history, monitor=run.monitor(), best=best)


def plot_history(
    history: History, *, monitor: str = "val_accuracy", best: int | None = None
) -> Figure:
    """Loss and accuracy per epoch, training vs validation, with the best epoch marked.

    `best`: the 1-based epoch to mark, as run.json's `best_epoch` names it (a run of the seed
    recipe keeps its last epoch); by default the one training keeps by `monitor`
    (`best_epoch`). Without validation columns (the seed recipe) a `val_` monitor falls back
    to its training metric, so the best epoch is still marked, and the annotation says which
    metric chose it.
    """
    if not history:
        raise CnnlabError("the training history is empty; train the model first (`cnnlab train`)")
    monitor = recorded_monitor(monitor, has_validation=any(monitor in row for row in history))
    epochs = epoch_numbers(history)
    if best not in epochs:
        best = best_epoch(history, monitor)

    fig = figure()
    fig.set_size_inches(11, 4.2)
    fig.suptitle(f"Training history ({len(history)} epoch{'s' if len(history) != 1 else ''})")
    for ax, metric in zip(fig.subplots(1, len(PANELS)), PANELS, strict=True):
        _plot_metric(ax, history, epochs, metric)
        if best is not None:
            ax.axvline(best, color=BEST_COLOUR, linestyle="--", linewidth=1)
            if _panel_for(monitor) == metric:
                _annotate_best(ax, history, epochs, best, monitor)
    return fig


def _plot_metric(ax: Axes, history: History, epochs: list[int], metric: str) -> None:
    """One panel: the training and (where recorded) validation curve of `metric`."""
    from matplotlib.ticker import MaxNLocator

    marker = "o" if len(epochs) <= MAX_EPOCHS_WITH_MARKERS else None
    for column, label in ((metric, "training"), (f"val_{metric}", "validation")):
        if any(column in row for row in history):
            values = [row.get(column, math.nan) for row in history]
            ax.plot(epochs, values, marker=marker, markersize=4, label=label)
    if not ax.lines:
        ax.text(0.5, 0.5, f"no {metric} recorded", transform=ax.transAxes, ha="center")
    else:
        ax.legend(loc="best")
    ax.set_title(metric)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    if len(epochs) <= MAX_EPOCH_TICKS:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.grid(alpha=0.3)


def _annotate_best(ax: Axes, history: History, epochs: list[int], best: int, monitor: str) -> None:
    """Write the best epoch and its monitored value next to the marker line."""
    value = history[epochs.index(best)].get(monitor)
    if value is None:
        return  # the marked epoch did not record `monitor`: the line alone says which it is
    ax.annotate(
        f"best epoch {best}\n{monitor} = {value:.4f}",
        xy=(best, value),
        # Accuracy rises and loss falls, so the lower (upper) right of the panel is free.
        xytext=(0.65, 0.75 if lower_is_better(monitor) else 0.25),
        textcoords="axes fraction",
        ha="center",
        color=BEST_COLOUR,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": BEST_COLOUR},
        arrowprops={"arrowstyle": "->", "color": BEST_COLOUR},
    )


def _panel_for(monitor: str) -> str:
    return monitor.removeprefix("val_")
