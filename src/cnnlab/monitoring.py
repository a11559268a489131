"""What a monitored metric's name means: which way is better, what a run recorded, and which
epoch a run keeps.

Callbacks, the best-epoch choice and the history plot all ask these questions; they get one
answer here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

VALIDATION_PREFIX = "val_"


def mode_for(metric: str) -> str:
    """'min' for losses and errors, 'max' for everything else (accuracy, AUC...)."""
    return "min" if ("loss" in metric or "error" in metric) else "max"


def lower_is_better(metric: str) -> bool:
    """True for losses and errors, which improve downwards."""
    return mode_for(metric) == "min"


def recorded_monitor(monitor: str, *, has_validation: bool) -> str:
    """`monitor`, or its training metric where the run has no validation metrics.

    A run without a validation split (the seed recipe) records `accuracy` but no
    `val_accuracy`; a `val_` monitor then means the training metric of the same name.
    """
    if monitor.startswith(VALIDATION_PREFIX) and not has_validation:
        return monitor.removeprefix(VALIDATION_PREFIX)
    return monitor


def tie_breaker_for(history: Sequence[Mapping[str, float]]) -> str:
    """The loss that decides between epochs whose monitored value is equal: `val_loss` where
    the run has validation metrics, else `loss`."""
    return "val_loss" if any("val_loss" in row for row in history) else "loss"


def best_row(
    history: Sequence[Mapping[str, float]],
    monitor: str | None,
    tie_breaker: str | None = None,
) -> Mapping[str, float] | None:
    """The epoch a run keeps (its row of history.csv), as `BestModelCheckpoint` chooses it:
    the best finite `monitor` (lowest for losses, highest otherwise) of an epoch whose loss is
    finite, ties going to the lowest `tie_breaker` (default: `tie_breaker_for(history)`), the
    earliest of equals. `monitor` None: the last epoch whose loss is finite (a run that keeps
    the last model; an epoch whose loss is NaN is never saved).

    None when no epoch qualifies (an empty history, or `monitor` never recorded).
    """
    finite = [row for row in history if math.isfinite(row.get("loss", 0.0))]
    if monitor is None:  # the checkpoint saved every epoch whose loss was finite: the last
        return finite[-1] if finite else None
    tie = tie_breaker or tie_breaker_for(history)
    sign = -1.0 if lower_is_better(monitor) else 1.0
    scored = [row for row in finite if math.isfinite(row.get(monitor, math.nan))]
    if not scored:
        return None
    return max(scored, key=lambda row: (sign * row[monitor], -row.get(tie, math.inf)))
