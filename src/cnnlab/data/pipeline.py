"""The input pipeline: in-memory arrays, shuffled each epoch, batched, prefetched.

With the TensorFlow backend (the default) this is tf.data; it is one of the few modules allowed
to call TensorFlow directly (see DESIGN.md). With another Keras backend (`KERAS_BACKEND=jax` or
`torch`, e.g. on a GPU machine without TensorFlow) it is a `keras.utils.PyDataset` over the
same arrays, so training needs no TensorFlow at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnlab._backend import keras as _keras

_PREFETCH = 2
"""Batches made ready ahead of the model. Making one is a few microseconds of copying, against
milliseconds a training step, so two keep the model fed without tf.data's autotuner."""

_ITERATORS_PER_EPOCH = 2
"""Iterators Keras' `fit` creates over a dataset of known length each epoch (Keras 3's
EpochIterator: one to run the epoch, one made ready at its end and dropped)."""


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    skip_epochs: int = 0,
) -> Any:
    """A dataset of (images, labels) batches that keeps the model fed, for `model.fit`.

    Shuffled, each epoch's order depends only on `seed` and the epoch's number: a run resumed
    after `skip_epochs` finished epochs sees the orders an uninterrupted run would.
    """
    keras = _keras()  # sets the quiet TensorFlow environment before the first import
    if keras.backend.backend() != "tensorflow":
        return _array_batches(x, y, batch_size, shuffle=shuffle, seed=seed, skip_epochs=skip_epochs)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        # Each new iterator draws the next order from the shuffle's seed generator. Keras' fit
        # makes two an epoch (one as the epoch starts, one, unused, as it ends), so creating
        # and dropping as many per finished epoch advances the generator to where an
        # uninterrupted run would be; creating an iterator reads no data.
        # tests/training/test_fault_injection.py fails if a Keras release changes that count.
        for _ in range(skip_epochs * _ITERATORS_PER_EPOCH):
            iter(dataset)
    # tf.data's autotuner is off: on a 2-core CPU its thread held up the start of an epoch by up
    # to 2.8 s, the CPU idle (docs/performance.md), and a fixed prefetch is as fast here.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).prefetch(_PREFETCH).with_options(options)


def _array_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    skip_epochs: int = 0,
) -> Any:
    """A `keras.utils.PyDataset` of batches of (x, y), in a new random order every epoch.

    Built in a function because PyDataset comes from Keras, which is imported lazily.
    """
    keras = _keras()

    class _ArrayBatches(keras.utils.PyDataset):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._rng = np.random.default_rng(seed)
            self._order = self._rng.permutation(len(x)) if shuffle else np.arange(len(x))
            for _ in range(skip_epochs if shuffle else 0):  # the orders of finished epochs
                self._order = self._rng.permutation(len(x))

        def __len__(self) -> int:
            return math.ceil(len(x) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = self._order[index * batch_size : (index + 1) * batch_size]
            return x[rows], y[rows]

        def on_epoch_end(self) -> None:
            if shuffle:
                self._order = self._rng.permutation(len(x))

    return _ArrayBatches()
