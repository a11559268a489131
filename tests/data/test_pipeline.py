"""The training input pipeline (`cnnlab.data.pipeline.make_dataset`) on the TensorFlow backend."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.data.pipeline import _ITERATORS_PER_EPOCH, make_dataset

tf = pytest.importorskip("tensorflow")


def _data(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n, dtype="float32").reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 1), "float32")
    return x, np.arange(n, dtype="int64")


def _epoch(dataset) -> list[list[int]]:
    """One epoch as Keras' fit reads it: batches of labels, and the spare iterator it drops."""
    batches = [labels.numpy().tolist() for _, labels in dataset]
    for _ in range(_ITERATORS_PER_EPOCH - 1):
        iter(dataset)
    return batches


def test_every_image_once_an_epoch_in_batches():
    x, y = _data(50)
    batches = _epoch(make_dataset(x, y, 16, shuffle=True, seed=3))
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert sorted(label for batch in batches for label in batch) == list(range(50))


def test_images_travel_with_their_labels():
    x, y = _data(20)
    for images, labels in make_dataset(x, y, 8, shuffle=True, seed=1):
        np.testing.assert_array_equal(images.numpy()[:, 0, 0, 0], labels.numpy())


def test_the_order_changes_each_epoch_and_repeats_with_the_seed():
    x, y = _data(40)
    first, again = (make_dataset(x, y, 40, shuffle=True, seed=7) for _ in range(2))
    orders = [_epoch(first)[0] for _ in range(3)]
    assert orders == [_epoch(again)[0] for _ in range(3)]
    assert len({tuple(o) for o in orders}) == 3
    assert orders[0] != list(range(40))


def test_without_shuffle_the_order_is_the_arrays():
    x, y = _data(10)
    batches = _epoch(make_dataset(x, y, 4))
    assert [label for batch in batches for label in batch] == list(range(10))


@pytest.mark.parametrize("finished", [1, 2])
def test_a_resumed_run_sees_the_orders_an_uninterrupted_one_would(finished):
    x, y = _data(30)
    uninterrupted = make_dataset(x, y, 30, shuffle=True, seed=5)
    orders = [_epoch(uninterrupted)[0] for _ in range(finished + 2)]
    resumed = make_dataset(x, y, 30, shuffle=True, seed=5, skip_epochs=finished)
    assert [_epoch(resumed)[0] for _ in range(2)] == orders[finished:]


def test_tf_data_autotuning_is_off():
    # docs/performance.md: with the autotuner on, the start of an epoch stalled for up to 2.8 s
    # (the CPU idle) on a 2-core machine; a fixed prefetch of two batches kept the model fed.
    x, y = _data(10)
    assert make_dataset(x, y, 4, shuffle=True, seed=0).options().autotune.enabled is False
