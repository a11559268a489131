"""Tests for cnnlab.monitoring: which way a metric improves, what a run recorded, and the one
best-epoch rule (`best_row`) that training, run.json and the history plot share.

The history plot's use of the rule is tested in tests/visualize/test_history_plot.py; here the
rule itself, one table per question.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from cnnlab.monitoring import (
    best_row,
    lower_is_better,
    mode_for,
    recorded_monitor,
    tie_breaker_for,
)

NAN = math.nan
INF = math.inf


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("sparse_categorical_crossentropy_loss", "min"),
        ("error", "min"),
        ("val_top_1_error", "min"),
        ("accuracy", "max"),
        ("val_accuracy", "max"),
        ("val_auc", "max"),
        ("sparse_top_k_categorical_accuracy", "max"),
        ("", "max"),
    ],
)
def test_mode_for_and_lower_is_better_agree(metric: str, mode: str) -> None:
    assert mode_for(metric) == mode
    assert lower_is_better(metric) is (mode == "min")


@pytest.mark.parametrize(
    ("monitor", "has_validation", "recorded"),
    [
        ("val_accuracy", True, "val_accuracy"),
        ("val_accuracy", False, "accuracy"),  # the seed recipe records no val_ metrics
        ("val_loss", False, "loss"),
        ("accuracy", False, "accuracy"),
        ("accuracy", True, "accuracy"),
        ("loss", True, "loss"),
        ("my_val_metric", False, "my_val_metric"),  # only a leading "val_" is a prefix
    ],
)
def test_recorded_monitor(monitor: str, has_validation: bool, recorded: str) -> None:
    assert recorded_monitor(monitor, has_validation=has_validation) == recorded


@pytest.mark.parametrize(
    ("history", "tie"),
    [
        ([], "loss"),
        ([{"epoch": 0, "loss": 1.0, "accuracy": 0.5}], "loss"),
        ([{"epoch": 0, "loss": 1.0, "val_loss": 1.2}], "val_loss"),
        ([{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.9, "val_loss": 1.1}], "val_loss"),
    ],
)
def test_the_tie_breaker_is_val_loss_only_with_validation(
    history: Sequence[Mapping[str, float]], tie: str
) -> None:
    assert tie_breaker_for(history) == tie


def _rows(*columns: tuple[str, Sequence[float]]) -> list[dict[str, float]]:
    """A history from columns: _rows(("loss", [1, .5]), ...) -> [{"epoch": 0, "loss": 1}, ...]."""
    n = len(columns[0][1])
    return [
        {"epoch": float(i), **{name: float(values[i]) for name, values in columns}}
        for i in range(n)
    ]


# Each case: the history, the monitor, an explicit tie-breaker (None: the default), and the
# 0-based epoch best_row must keep (None: no row).
BEST_ROW_CASES = {
    "highest accuracy": (
        _rows(
            ("loss", [1, 0.8, 0.6]), ("val_loss", [1, 0.9, 0.95]), ("val_accuracy", [0.5, 0.7, 0.6])
        ),
        "val_accuracy",
        None,
        1,
    ),
    "lowest loss": (
        _rows(
            ("loss", [1, 0.8, 0.6]), ("val_loss", [1, 0.7, 0.9]), ("val_accuracy", [0.5, 0.6, 0.7])
        ),
        "val_loss",
        None,
        1,
    ),
    "a tie on the monitor goes to the lower val_loss": (
        _rows(
            ("loss", [1, 0.5, 0.4]),
            ("val_loss", [0.9, 0.6, 0.5]),
            ("val_accuracy", [0.7, 0.8, 0.8]),
        ),
        "val_accuracy",
        None,
        2,
    ),
    "the lower val_loss wins a tie even when it comes first": (
        _rows(
            ("loss", [1, 0.5, 0.4]),
            ("val_loss", [0.9, 0.5, 0.6]),
            ("val_accuracy", [0.7, 0.8, 0.8]),
        ),
        "val_accuracy",
        None,
        1,
    ),
    "without validation a tie goes to the lower training loss": (
        _rows(("loss", [1, 0.5, 0.3]), ("accuracy", [0.7, 0.9, 0.9])),
        "accuracy",
        None,
        2,
    ),
    "an explicit tie-breaker overrides the default": (
        _rows(
            ("loss", [1, 0.3, 0.5]),
            ("val_loss", [0.9, 0.6, 0.5]),
            ("val_accuracy", [0.7, 0.8, 0.8]),
        ),
        "val_accuracy",
        "loss",
        1,
    ),
    "a full tie keeps the earliest epoch": (
        _rows(
            ("loss", [1, 0.5, 0.5]),
            ("val_loss", [0.9, 0.5, 0.5]),
            ("val_accuracy", [0.7, 0.8, 0.8]),
        ),
        "val_accuracy",
        None,
        1,
    ),
    "a tied row without the tie-breaker loses to one with it": (
        [
            {"epoch": 0.0, "loss": 0.5, "val_accuracy": 0.8},
            {"epoch": 1.0, "loss": 0.5, "val_accuracy": 0.8, "val_loss": 0.7},
        ],
        "val_accuracy",
        None,
        1,
    ),
    # NaN first: max() keeps a first NaN (no comparison with it is true) unless it is skipped.
    "a NaN monitor is skipped": (
        _rows(
            ("loss", [1, 0.8, 0.6]), ("val_loss", [NAN, 0.9, 1]), ("val_accuracy", [NAN, 0.6, 0.5])
        ),
        "val_accuracy",
        None,
        1,
    ),
    "a NaN monitor is skipped where lower is better (NaN is not the minimum)": (
        _rows(
            ("loss", [1, 0.8, 0.6]), ("val_loss", [NAN, 1, 0.9]), ("val_accuracy", [0.5, 0.6, 0.7])
        ),
        "val_loss",
        None,
        2,
    ),
    "an infinite monitor is skipped": (
        _rows(
            ("loss", [1, 0.8, 0.6]), ("val_loss", [1, 0.9, 0.8]), ("val_accuracy", [0.5, INF, 0.6])
        ),
        "val_accuracy",
        None,
        2,
    ),
    "an epoch whose training loss is NaN is never kept, whatever its monitor": (
        _rows(
            ("loss", [1, 0.8, NAN]), ("val_loss", [1, 0.9, 0.1]), ("val_accuracy", [0.5, 0.6, 0.99])
        ),
        "val_accuracy",
        None,
        1,
    ),
    "an epoch whose training loss is infinite is never kept": (
        _rows(
            ("loss", [1, INF, 0.6]), ("val_loss", [1, 0.2, 0.9]), ("val_accuracy", [0.5, 0.99, 0.6])
        ),
        "val_accuracy",
        None,
        2,
    ),
    "every row NaN: no row": (
        _rows(("loss", [1, 0.8]), ("val_accuracy", [NAN, NAN])),
        "val_accuracy",
        None,
        None,
    ),
    "a monitor never recorded: no row": (
        _rows(("loss", [1, 0.8]), ("val_accuracy", [0.5, 0.6])),
        "val_auc",
        None,
        None,
    ),
    "an empty history: no row": ([], "val_accuracy", None, None),
    "no monitor keeps the last epoch, not the best": (
        _rows(("loss", [1, 0.5, 0.9]), ("val_accuracy", [0.5, 0.9, 0.6])),
        None,
        None,
        2,
    ),
    "no monitor and an empty history: no row": ([], None, None, None),
}


@pytest.mark.parametrize(
    ("history", "monitor", "tie_breaker", "expected"),
    list(BEST_ROW_CASES.values()),
    ids=list(BEST_ROW_CASES),
)
def test_best_row(
    history: list[dict[str, float]],
    monitor: str | None,
    tie_breaker: str | None,
    expected: int | None,
) -> None:
    kept = best_row(history, monitor, tie_breaker)
    if expected is None:
        assert kept is None
    else:
        assert kept is not None and kept["epoch"] == expected
        assert kept is history[expected]  # the row itself, not a copy


def test_best_row_does_not_change_the_history() -> None:
    history = _rows(("loss", [1, NAN, 0.6]), ("val_accuracy", [0.5, 0.9, 0.9]))
    before = [dict(row) for row in history]
    best_row(history, "val_accuracy")
    assert len(history) == len(before)
    assert all(
        row.keys() == old.keys()
        and all(row[k] == old[k] or (math.isnan(row[k]) and math.isnan(old[k])) for k in row)
        for row, old in zip(history, before, strict=True)
    )


def test_no_monitor_skips_a_last_epoch_whose_loss_is_nan() -> None:
    # The seed recipe keeps the last model (monitor None) and trains with TerminateOnNaN: the
    # epoch that went NaN still gets its history row, but the checkpoint was not written for it.
    history = _rows(("loss", [1, 0.5, NAN]), ("accuracy", [0.5, 0.8, 0.1]))
    kept = best_row(history, None)
    assert kept is not None and kept["epoch"] == 1
