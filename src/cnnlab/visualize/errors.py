"""The model's worst mistakes: the test images with the highest loss, with true and predicted class.

Loss here is the cross-entropy of the true class, -log p(true), as Keras' sparse categorical
cross-entropy computes it per image; the highest-loss images are the confident mistakes, which
say more about a model than its accuracy does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cnnlab.errors import CnnlabError
from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

EPSILON = 1e-7  # Keras' clip on probabilities before the log
BATCH_SIZE = 256
INCHES_PER_IMAGE = 2.4


def highest_loss(
    model: keras.Model, x: ArrayLike, y: ArrayLike, n: int = 16
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Indices of the `n` images with the highest loss, worst first, and their probabilities.

    `y` holds class indices (or one-hot rows); the probabilities have one row per returned index
    and one column per class.
    """
    if n < 1:
        raise CnnlabError(f"n = {n}: ask for at least one image")
    labels = _class_indices(y)
    probabilities = _as_probabilities(
        model.predict(np.asarray(x), batch_size=BATCH_SIZE, verbose=0)
    )
    if len(labels) != len(probabilities):
        raise CnnlabError(f"{len(probabilities)} images but {len(labels)} labels; pass one each")
    losses = cross_entropy(probabilities, labels)
    # A stable sort keeps equal losses in index order, so the choice is reproducible.
    worst = np.argsort(-losses, kind="stable")[:n].astype(np.int64)
    return worst, probabilities[worst]


def cross_entropy(probabilities: ArrayLike, labels: ArrayLike) -> NDArray[np.float32]:
    """Per-image loss -log p(true class), with Keras' clipping so a zero gives a finite value."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    true_p = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(true_p, EPSILON, 1.0))


def plot_errors(
    model: keras.Model, x: ArrayLike, y: ArrayLike, class_names: Sequence[str], n: int = 16
) -> Figure:
    """A grid of the `n` highest-loss images, each titled with its true and predicted class."""
    images = np.asarray(x)
    labels = _class_indices(y)
    indices, probabilities = highest_loss(model, images, labels, n)
    if probabilities.shape[1] != len(class_names):
        raise CnnlabError(
            f"the model predicts {probabilities.shape[1]} classes but {len(class_names)} class "
            "names were given; pass the run's class names"
        )

    columns = min(len(indices), math.ceil(math.sqrt(len(indices))))
    rows = math.ceil(len(indices) / columns)
    fig = figure()
    fig.set_size_inches(INCHES_PER_IMAGE * columns, INCHES_PER_IMAGE * rows + 0.6)
    fig.suptitle(
        f"The {len(indices)} images with the highest loss (-log p of the true class); "
        "red: misclassified"
    )
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, index, p in zip(axes, indices, probabilities, strict=False):
        predicted = int(p.argmax())
        correct = predicted == labels[index]
        ax.imshow(_displayable(images[index]), cmap="gray")
        ax.set_title(
            f"true: {class_names[labels[index]]} / pred: {class_names[predicted]} "
            f"(p={p[predicted]:.2f})",
            fontsize=8,
            color="black" if correct else "firebrick",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(indices) :]:
        ax.set_axis_off()
    return fig


def _class_indices(y: ArrayLike) -> NDArray[np.int64]:
    """Labels as class indices, from indices or one-hot rows."""
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    return labels.reshape(-1).astype(np.int64)


def _as_probabilities(outputs: Any) -> NDArray[np.float32]:
    """Model outputs as probabilities: kept if they already are, else softmax of the logits."""
    outputs = np.asarray(outputs, dtype=np.float32)
    if outputs.min() >= 0 and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _displayable(image: NDArray[Any]) -> NDArray[Any]:
    """An image as imshow takes it: grayscale without a channel axis, colour scaled to 0..1."""
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0]
    if image.dtype.kind == "f" and image.max() > 1.0:  # float colour images in 0..255
        return image / 255.0
    return image
