"""A batch of training pictures as the model sees them: after the recipe and augmentation.

Before a long run, a look at what training is fed tells a wrong crop, a wrong colour mode or
too strong an augmentation at once (fastai's `show_batch`). The pictures come from the run's
data (`cnnlab.data.feed`), and the model's augmentation layers (`Random*`, active only while
training) are applied in training mode, each with its own random draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INCHES_PER_PICTURE = 1.6


def augmentation_layers(model: Any) -> list[Any]:
    """The model's augmentation layers, in order (those that act only while training)."""
    return [layer for layer in model.layers if type(layer).__name__.startswith("Random")]


def augmented(model: Any, images: np.ndarray) -> np.ndarray:
    """`images` through the model's augmentation layers in training mode (each layer draws
    from its own random generator, as in training)."""
    from cnnlab._backend import keras as _keras

    keras = _keras()
    x: Any = images.astype("float32")
    for layer in augmentation_layers(model):
        x = layer(x, training=True)
    return np.clip(np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float32), 0.0, 1.0)


def plot_batch(
    images: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    *,
    title: str = "",
) -> Figure:
    """A grid of model inputs (N, H, W, C) in [0, 1], each titled with its class."""
    count = len(images)
    columns = min(count, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    fig = figure()
    fig.set_size_inches(INCHES_PER_PICTURE * columns, INCHES_PER_PICTURE * rows + 0.5)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, width=int(18 * columns))), fontsize=9)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, label in zip(axes, images, labels, strict=False):
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=1)
        ax.set_title(str(class_names[int(label)]), fontsize=8)
    return fig
