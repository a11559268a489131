"""Tiny synthetic data shared by the tests: four easy classes of 28x28 images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cnnlab import config

N_CLASSES = 4
CLASS_NAMES = ("top", "bottom", "left", "right")

TINY_ARCH = """
name = "tiny"
[[layers]]
type = "Conv2D"
filters = 4
kernel_size = [3, 3]
activation = "relu"
[[layers]]
type = "MaxPool2D"
pool_size = [2, 2]
[[layers]]
type = "Flatten"
[[layers]]
type = "Dense"
units = "num_classes"
activation = "softmax"
"""


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 uint8 images: a bright bar at the top, bottom, left or right, plus noise."""
    images = rng.integers(0, 40, size=(len(labels), 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        if label == 0:
            image[2:8, 4:24] = 230
        elif label == 1:
            image[20:26, 4:24] = 230
        elif label == 2:
            image[4:24, 2:8] = 230
        else:
            image[4:24, 20:26] = 230
    return images


def write_tiny_npz(
    path: Path, rng: np.random.Generator, *, train_per_class: int, test_per_class: int
) -> Path:
    """The tiny dataset as an .npz file cnnlab reads (`--dataset PATH`): the classes in turn,
    `train_per_class` and `test_per_class` images of each."""
    y_train = np.tile(np.arange(N_CLASSES), train_per_class)
    y_test = np.tile(np.arange(N_CLASSES), test_per_class)
    np.savez(
        path,
        x_train=make_images(y_train, rng),
        y_train=y_train,
        x_test=make_images(y_test, rng),
        y_test=y_test,
        class_names=np.array(CLASS_NAMES),
    )
    return path


def make_tiny_config(runs_dir: Path, npz: Path, arch: Path, **train: object) -> config.Config:
    """A Config that trains the tiny architecture on the tiny data into `runs_dir/tiny`."""
    from cnnlab.config import load_config

    overrides = {
        "data.dataset": str(npz),
        "data.validation_split": 0.25,
        "model.architecture": str(arch),
        "train.epochs": 3,
        "train.seed": 7,
        "train.learning_rate": 0.01,
        "train.lr_decay": 1.0,  # the tiny data is learned in a few epochs at a constant rate
        "model.init_filters": "random",
        "run.runs_dir": str(runs_dir),
        "run.name": "tiny",
    }
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return load_config(overrides=overrides)
