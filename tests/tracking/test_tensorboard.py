"""TensorBoard's event files in a run folder, read back with TensorBoard's own reader: the
training curves equal history.csv, the evaluation adds the test point and its pictures, and a
resumed run's files hold each epoch once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from boards import board_mismatches, read_board

from cnnlab.config import Config

pytest.importorskip("tensorboard")


def test_the_training_curves_are_history_csv(tiny_run: Path) -> None:
    assert board_mismatches(tiny_run) == []
    train = read_board(tiny_run / "logs", "train")
    epochs = json.loads((tiny_run / "run.json").read_text())["epochs_run"]
    assert [step for step, _ in train["epoch_epoch_seconds"]] == list(range(epochs))
    assert [step for step, _ in train["keras"]] == [0]  # the model's graph, once
    assert not any("histogram" in tag for tag in train)  # only when asked for
    validation = read_board(tiny_run / "logs", "validation")
    assert sorted(validation) == ["epoch_accuracy", "epoch_loss"]  # none against iterations


def test_evaluate_adds_the_test_point_and_its_pictures(evaluated_run: Path) -> None:
    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    best = json.loads((evaluated_run / "run.json").read_text())["best_epoch"]
    test = read_board(evaluated_run / "logs", "test")
    assert test["epoch_loss"] == [(best - 1, pytest.approx(metrics["test_loss"], rel=1e-6))]
    assert test["epoch_accuracy"] == [(best - 1, pytest.approx(metrics["test_accuracy"]))]
    assert test["confusion_matrix"] == test["highest_loss"] == [(best - 1, "images")]
    assert test["report"] == [(best - 1, "text")]


def test_evaluating_again_replaces_the_test_run(evaluated_run: Path, tmp_path: Path) -> None:
    import shutil

    from cnnlab.evaluation import evaluate

    run = Path(shutil.copytree(evaluated_run, tmp_path / "tiny"))
    evaluate(run, batch_size=7)
    assert len(list((run / "logs" / "test").iterdir())) == 1
    assert len(read_board(run / "logs", "test")["epoch_loss"]) == 1


def test_a_resumed_run_keeps_only_the_finished_epochs(tmp_path: Path) -> None:
    """The epochs a killed run logged past its backup go before the resumed run logs them."""
    import tensorflow as tf

    from cnnlab.tracking.events import keep_epochs_before

    for run in ("train", "validation"):
        writer = tf.summary.create_file_writer(str(tmp_path / run))
        with writer.as_default():
            for step in range(4):
                tf.summary.scalar("epoch_loss", 1.0 / (step + 1), step=step)
        writer.close()
    keep_epochs_before(tmp_path, 2)
    for run in ("train", "validation"):
        assert read_board(tmp_path, run)["epoch_loss"] == [(0, 1.0), (1, 0.5)]
    keep_epochs_before(tmp_path, 0)  # a run that starts over
    assert not (tmp_path / "train").exists() and not (tmp_path / "validation").exists()


def test_without_tf_summary_a_run_trains_with_one_warning(
    tmp_path: Path,
    tiny_npz: Path,
    tiny_arch: Path,
    tiny_config: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A machine training on JAX without TensorFlow: no event files, one line, a full run."""
    from cnnlab.tracking import events
    from cnnlab.training.trainer import train

    monkeypatch.setattr(events, "missing", lambda: "tensorflow not installed")
    with caplog.at_level(logging.WARNING):
        result = train(tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=1))
    assert result.state.finished and not (result.run_dir / "logs").exists()
    said = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert said == ["no TensorBoard files for this run: tensorflow not installed"]
