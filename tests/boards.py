"""Reading a run's TensorBoard event files back with TensorBoard's own reader, for the tests
(and tests/backend_flow.py, on every Keras backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def read_board(logs_dir: Path, run: str) -> dict[str, list[tuple[int, Any]]]:
    """Every tag of one TensorBoard run (`train`, `validation`, `test`) as (step, value)
    pairs in the order written: a number for a scalar, the plugin's name for anything else."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    reader = ea.EventAccumulator(str(logs_dir / run), size_guidance={ea.TENSORS: 0})
    reader.Reload()
    found: dict[str, list[tuple[int, Any]]] = {}
    for tag in reader.Tags()["tensors"]:
        plugin = reader.SummaryMetadata(tag).plugin_data.plugin_name
        found[tag] = [
            (
                event.step,
                float(tensor_util.make_ndarray(event.tensor_proto))
                if plugin == "scalars"
                else plugin,
            )
            for event in reader.Tensors(tag)
        ]
    return found


def board_mismatches(run_dir: Path) -> list[str]:
    """How the run's training event files differ from its history.csv (empty: they agree):
    each column X is the tag `epoch_X` of `train` (`val_X`: of `validation`), one point per
    epoch at step = epoch, its value equal to float32 precision (tf.summary stores float32)."""
    from cnnlab.runs import Run

    history = Run(run_dir).history()
    boards = {name: read_board(run_dir / "logs", name) for name in ("train", "validation")}
    problems = []
    for column in history[0]:
        if column == "epoch":
            continue
        name, key = ("validation", column[4:]) if column.startswith("val_") else ("train", column)
        points = boards[name].get(f"epoch_{key}")
        if points is None:
            problems.append(f"{column}: no tag epoch_{key} in {name}")
            continue
        expected = [(int(row["epoch"]), row[column]) for row in history]
        steps = [step for step, _ in points]
        if steps != [step for step, _ in expected]:
            problems.append(f"{column}: steps {steps}, history's epochs {len(expected)}")
        elif not all(
            math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-7)
            for (_, value), (_, want) in zip(points, expected, strict=True)
        ):
            problems.append(f"{column}: {points} != {expected}")
    if "epoch_learning_rate" not in boards["train"]:
        problems.append("no epoch_learning_rate in train")
    return problems
