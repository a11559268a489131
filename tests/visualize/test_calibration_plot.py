from __future__ import annotations

import numpy as np

from cnnlab.calibration import fit_temperature, reliability, with_temperature
from cnnlab.visualize.calibration import plot_calibration


def _overconfident(n: int = 2_000) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities three times too sharp for how often they are right."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, size=(n, 5))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in calibrated])
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    return sharp, labels


def test_picture_before_and_after(check_png) -> None:
    probs, labels = _overconfident()
    temperature = fit_temperature(probs, labels)
    before = reliability(probs, labels)
    after = reliability(with_temperature(probs, temperature), labels)
    fig = plot_calibration(before, after, temperature)
    check_png(fig, "calibration")
    top_left, _, top_right, _ = fig.axes
    assert top_left.get_title() == f"as trained: ECE {before.ece:.4f}"
    assert top_right.get_title().startswith(f"after temperature {temperature:.3g}: ECE")
    assert after.ece < before.ece / 2
    # One accuracy bar per filled bin: their heights are the bins' accuracies.
    filled = before.counts > 0
    heights = [p.get_height() for p in top_left.containers[0]]
    assert heights == list(before.accuracy[filled])


def test_picture_without_a_temperature(check_png) -> None:
    probs, labels = _overconfident(200)
    fig = plot_calibration(reliability(probs, labels))
    check_png(fig, "calibration-before")
    assert len(fig.axes) == 2  # the diagram and its counts
