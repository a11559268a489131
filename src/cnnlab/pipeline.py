"""The tf.data input pipeline: in-memory arrays, shuffled each epoch, batched, prefetched.

This is one of the few modules allowed to call TensorFlow directly (see DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab._backend import keras as _keras


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
) -> Any:
    """A `tf.data.Dataset` of (images, labels) batches that keeps the model fed."""
    _keras()  # sets the quiet TensorFlow environment before the first import
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
