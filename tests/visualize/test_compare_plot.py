"""`cnnlab.visualize.compare`: several runs' curves on one picture."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_hex

from cnnlab.errors import CnnlabError
from cnnlab.visualize.compare import plot_comparison


def _slower(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The same epochs with every loss higher and one epoch fewer: a second run."""
    higher = [{**r, "loss": r["loss"] + 0.2, "val_loss": r["val_loss"] + 0.2} for r in history]
    return higher[:-1]


def test_picture(fake_history, check_png) -> None:
    check_png(plot_comparison([("a", fake_history), ("b", _slower(fake_history))]), "compare")


def test_one_colour_per_run_training_solid_validation_dashed(fake_history) -> None:
    fig = plot_comparison([("a", fake_history), ("b", _slower(fake_history))])
    loss_ax, accuracy_ax = fig.axes[:2]
    assert [ax.get_title() for ax in (loss_ax, accuracy_ax)] == ["loss", "accuracy"]
    for ax in (loss_ax, accuracy_ax):
        lines = ax.get_lines()
        assert len(lines) == 4  # two runs x (training, validation)
        assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
        colours = [to_hex(line.get_color()) for line in lines]
        assert colours[0] == colours[1] != colours[2] == colours[3]
    # The loss panel's first line is run a's training loss, epoch by epoch (1-based).
    xs, ys = loss_ax.get_lines()[0].get_data()
    assert list(xs) == [1, 2, 3, 4, 5]
    assert list(ys) == [row["loss"] for row in fake_history]
    assert len(loss_ax.get_lines()[2].get_data()[0]) == 4  # run b stopped an epoch earlier
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["a", "b", "training", "validation"]


def test_a_run_without_epochs_is_named_in_the_legend(fake_history, check_png) -> None:
    fig = plot_comparison([("done", fake_history), ("new", [])])
    check_png(fig, "compare_with_empty")
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "new (no epochs yet)" in legend
    assert len(fig.axes[0].get_lines()) == 2


def test_a_run_without_validation_has_no_dashed_line(fake_history) -> None:
    seed_recipe = [{k: row[k] for k in ("epoch", "accuracy", "loss")} for row in fake_history]
    fig = plot_comparison([("seed", seed_recipe), ("default", fake_history)])
    assert [line.get_linestyle() for line in fig.axes[0].get_lines()] == ["-", "-", "--"]


def test_nothing_to_compare_is_a_user_error() -> None:
    with pytest.raises(CnnlabError, match="no runs"):
        plot_comparison([])
