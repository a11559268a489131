from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.visualize.errors import BATCH_SIZE, cross_entropy, highest_loss, plot_errors


def test_highest_loss_matches_numpy(tiny_model, tiny_data):
    x, y = tiny_data
    indices, probabilities = highest_loss(tiny_model, x, y, n=10)

    # The same batch size as highest_loss: a batch split another way may round the last bits
    # differently on some CPUs' kernels, and near-equal losses would then swap places.
    predicted = tiny_model.predict(x, batch_size=BATCH_SIZE, verbose=0)
    losses = -np.log(np.clip(predicted[np.arange(len(y)), y], 1e-7, 1.0))
    expected = np.argsort(-losses, kind="stable")[:10]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(probabilities, predicted[expected], rtol=1e-5)
    assert np.all(np.diff(losses[indices]) <= 0)  # worst first


def test_highest_loss_takes_one_hot_labels(tiny_model, tiny_data, tiny_class_names):
    x, y = tiny_data
    one_hot = np.eye(len(tiny_class_names))[y]
    np.testing.assert_array_equal(
        highest_loss(tiny_model, x, one_hot, n=5)[0], highest_loss(tiny_model, x, y, n=5)[0]
    )


def test_cross_entropy_is_finite_for_zero_probability():
    losses = cross_entropy([[1.0, 0.0], [0.5, 0.5]], [1, 0])
    np.testing.assert_allclose(losses, [-np.log(1e-7), -np.log(0.5)], rtol=1e-5)


def test_picture(tiny_model, tiny_data, tiny_class_names, check_png):
    x, y = tiny_data
    fig = plot_errors(tiny_model, x, y, tiny_class_names, n=16)
    check_png(fig, "errors")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 16
    assert all(t.startswith("true: ") and " / pred: " in t and "(p=" in t for t in titles)
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in fig.axes)


def test_picture_with_fewer_images_than_the_grid(
    tiny_model, tiny_data, tiny_class_names, check_png
):
    x, y = tiny_data
    fig = plot_errors(tiny_model, x[:5], y[:5], tiny_class_names, n=16)
    check_png(fig, "errors_few")
    assert len([ax for ax in fig.axes if ax.get_title()]) == 5


def test_wrong_class_names_are_a_user_error(tiny_model, tiny_data):
    x, y = tiny_data
    with pytest.raises(CnnlabError, match="4 classes"):
        plot_errors(tiny_model, x, y, ["a", "b"], n=4)
