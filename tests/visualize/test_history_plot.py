from __future__ import annotations

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.monitoring import best_row
from cnnlab.visualize.history import best_epoch, epoch_numbers, plot_history


def _annotations(fig) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def test_picture(fake_history, check_png):
    check_png(plot_history(fake_history), "history")


def test_best_epoch_by_monitor(fake_history):
    assert best_epoch(fake_history, "val_accuracy") == 4
    assert best_epoch(fake_history, "val_loss") == 4
    assert best_epoch(fake_history, "accuracy") == 5
    assert best_epoch(fake_history, "loss") == 5
    assert best_epoch(fake_history, "val_auc") is None
    assert best_epoch([], "val_accuracy") is None


def test_best_epoch_is_marked_and_annotated(fake_history):
    fig = plot_history(fake_history, monitor="val_loss")
    assert _annotations(fig) == ["best epoch 4\nval_loss = 0.4000"]
    loss_ax = fig.axes[0]
    assert loss_ax.get_xlabel() == "epoch"
    assert {line.get_label() for line in loss_ax.lines} >= {"training", "validation"}


def test_epochs_are_one_based(fake_history):
    assert epoch_numbers(fake_history) == [1, 2, 3, 4, 5]
    assert epoch_numbers([{"loss": 1.0}, {"loss": 0.5}]) == [1, 2]


def test_without_validation_falls_back_to_training_metric(fake_history, check_png):
    seed_recipe = [{k: row[k] for k in ("epoch", "accuracy", "loss")} for row in fake_history]
    fig = plot_history(seed_recipe)
    check_png(fig, "history_no_validation")
    assert _annotations(fig) == ["best epoch 5\naccuracy = 0.8800"]
    assert all(line.get_label() != "validation" for ax in fig.axes for line in ax.lines)


def test_single_epoch(fake_history, check_png):
    fig = plot_history(fake_history[:1])
    check_png(fig, "history_one_epoch")
    assert _annotations(fig) == ["best epoch 1\nval_accuracy = 0.7000"]


def test_empty_history_is_a_user_error():
    with pytest.raises(CnnlabError, match="empty"):
        plot_history([])


def test_a_tie_on_the_monitor_marks_the_epoch_run_json_names(fake_history):
    # Epochs 2 and 4 share the best val_accuracy; the lower val_loss (epoch 4) decides, as in
    # training's checkpoint and run.json. The plot used to mark the first of the two.
    tied = [
        {**row, "val_accuracy": 0.88 if row["epoch"] in (1.0, 3.0) else 0.8} for row in fake_history
    ]
    kept = best_row(tied, "val_accuracy")
    assert kept is not None and kept["epoch"] == 3.0
    assert best_epoch(tied, "val_accuracy") == 4
    assert _annotations(plot_history(tied)) == ["best epoch 4\nval_accuracy = 0.8800"]


def test_the_plot_marks_the_epoch_it_is_given(fake_history):
    # A seed-recipe run keeps its last epoch whatever the monitor says; run.json names it.
    fig = plot_history(fake_history, monitor="val_accuracy", best=5)
    assert _annotations(fig) == ["best epoch 5\nval_accuracy = 0.8600"]
    assert _annotations(plot_history(fake_history, best=None)) == [
        "best epoch 4\nval_accuracy = 0.8800"
    ]
