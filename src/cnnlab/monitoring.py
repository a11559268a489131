"""What a monitored metric's name means: which way is better, and what a run recorded.

Callbacks, the best-epoch choice and the history plot all ask these two questions; they get
one answer here.
"""

from __future__ import annotations

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
