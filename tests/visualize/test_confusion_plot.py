from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.visualize.confusion import (
    format_most_confused,
    most_confused,
    plot_confusion,
    row_normalised,
)

NAMES = ["T-shirt/top", "Trouser", "Shirt"]
CONFUSION = [
    [80, 2, 18],
    [1, 98, 1],
    [30, 0, 70],
]


def test_picture(check_png):
    fig = plot_confusion(CONFUSION, NAMES)
    check_png(fig, "confusion")
    counts_ax, rates_ax = fig.axes[:2]
    for ax in (counts_ax, rates_ax):
        assert ax.get_xlabel() == "predicted class"
        assert ax.get_ylabel() == "true class"
        assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert len(fig.axes) == 4  # two matrices, two colour bars
    assert "80" in [t.get_text() for t in counts_ax.texts]
    assert "0.80" in [t.get_text() for t in rates_ax.texts]


def test_picture_with_ten_classes(check_png):
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 50, (10, 10)) + np.diag(rng.integers(800, 1000, 10))
    check_png(plot_confusion(confusion, [f"class {i}" for i in range(10)]), "confusion10")


def test_most_confused():
    assert most_confused(CONFUSION, NAMES, n=3) == [
        ("Shirt", "T-shirt/top", 30),
        ("T-shirt/top", "Shirt", 18),
        ("T-shirt/top", "Trouser", 2),
    ]
    # Zero cells are never listed, and ties keep row-major order.
    assert most_confused(CONFUSION, NAMES, n=10)[3:] == [
        ("Trouser", "T-shirt/top", 1),
        ("Trouser", "Shirt", 1),
    ]
    assert most_confused(np.diag([5, 5, 5]), NAMES) == []


def test_format_most_confused():
    text = format_most_confused(most_confused(CONFUSION, NAMES, n=2))
    assert text == "Shirt -> T-shirt/top: 30\nT-shirt/top -> Shirt: 18"
    assert format_most_confused([]) == "no class was mistaken for another"


def test_row_normalised_handles_empty_rows():
    rates = row_normalised([[3, 1], [0, 0]])
    assert rates.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(CnnlabError, match="3 class names"):
        plot_confusion([[1, 2], [3, 4]], NAMES)
