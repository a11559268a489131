"""Two or more runs side by side: the settings that differ, and what each achieved.

Settings are compared as config.toml's dotted keys (`train.learning_rate`), through `Config`, so
a key a run's file leaves out counts with its default value. The `run` section (the folder's
name and where it lives) is left out: it says where a run went, not what it did.
`cnnlab.visualize.compare` draws the runs' curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.catalog.listing import RunSummary, format_duration, summarize
from cnnlab.errors import CnnlabError, RunError
from cnnlab.runs import Run

IGNORED_SECTIONS = ("run",)
# metrics.json's figures, as (key, label); a row is shown where any run recorded it.
TEST_METRICS = (
    ("test_accuracy", "test accuracy"),
    ("test_loss", "test loss"),
    ("macro_f1", "macro F1"),
    ("ece", "ECE"),
    ("ece_calibrated", "ECE calibrated"),
)


@dataclass(frozen=True)
class Comparison:
    """The runs compared: a label each, the settings that differ and the metrics, each a list
    with one value per run (None where a run has none)."""

    runs: list[RunSummary]
    labels: list[str]
    settings: dict[str, list[Any]]
    metrics: dict[str, list[Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [
                {"label": label, "path": str(s.path)}
                for label, s in zip(self.labels, self.runs, strict=True)
            ],
            "settings": self.settings,
            "metrics": self.metrics,
        }


def compare_runs(paths: Sequence[str | Path]) -> Comparison:
    """Compare the run folders at `paths` (at least two); RunError for one that is not a
    readable run."""
    if len(paths) < 2:
        raise CnnlabError(f"compare needs at least two runs, got {len(paths)}")
    runs = [summarize(path) for path in paths]
    for summary in runs:
        if summary.status == "unreadable":
            raise RunError(f"{summary.path}: unreadable run ({summary.problem})")
    flat = [Run(s.path).config().dotted() for s in runs]
    keys = sorted({key for values in flat for key in values})
    settings = {
        key: [values.get(key) for values in flat]
        for key in keys
        if key.split(".")[0] not in IGNORED_SECTIONS
        and any(values.get(key) != flat[0].get(key) for values in flat)
    }
    return Comparison(runs, _labels(runs), settings, _metrics(runs))


def _metrics(runs: list[RunSummary]) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {"status": [s.status for s in runs]}
    monitors = {s.monitor for s in runs}
    if len(monitors) == 1:
        rows[f"best {monitors.pop()}"] = [s.best for s in runs]
    else:
        rows["monitor"] = [s.monitor for s in runs]
        rows["best"] = [s.best for s in runs]
    rows["best epoch"] = [s.best_epoch for s in runs]
    rows["epochs"] = [s.epochs for s in runs]
    rows["training seconds"] = [s.train_seconds for s in runs]
    tested = [Run(s.path).metrics() or {} for s in runs]
    for key, label in TEST_METRICS:
        values = [metrics.get(key) for metrics in tested]
        if key == "test_accuracy" or any(v is not None for v in values):
            rows[label] = values
    return rows


def _labels(runs: list[RunSummary]) -> list[str]:
    """Each run's folder name, or its path where two share a name."""
    names = [s.path.name for s in runs]
    return [
        name if names.count(name) == 1 else str(s.path) for name, s in zip(names, runs, strict=True)
    ]


def format_comparison(comparison: Comparison) -> str:
    """The comparison as two aligned tables: settings that differ, then metrics."""
    lines: list[list[str]] = [["", *comparison.labels]]
    if comparison.settings:
        lines.append(["settings that differ"])
        lines += [
            [f"  {key}", *(_setting(v) for v in values)]
            for key, values in comparison.settings.items()
        ]
    else:
        lines.append(["settings: the same (apart from the run's name and folder)"])
    lines.append(["metrics"])
    for label, values in comparison.metrics.items():
        if label == "training seconds":
            lines.append(["  training time", *(format_duration(v) for v in values)])
        else:
            lines.append([f"  {label}", *(_cell(v) for v in values)])
    columns = len(lines[0])
    widths = [max(len(row[i]) for row in lines if len(row) == columns) for i in range(columns)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        if len(row) == columns
        else row[0]
        for row in lines
    )


def _cell(value: Any) -> str:
    """A metric: 4 decimals for a float."""
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _setting(value: Any) -> str:
    """A setting exactly as config.toml would hold it (an empty string shown as "")."""
    if value is None:
        return "-"
    return '""' if value == "" else str(value)
