"""Tiny IDX datasets for the data tests, written with `write_idx` (imported by name: a test
module importing `conftest` can get another folder's conftest in a full run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data import write_idx
from cnnlab.data.sources import DatasetSpec

N_TRAIN, N_TEST, N_CLASSES = 20, 10, 10


@dataclass(frozen=True)
class Tiny:
    """A registered tiny dataset and the folder holding its good files (gzip'd)."""

    spec: DatasetSpec
    good_dir: Path
    arrays: dict[str, np.ndarray]


def tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(N_TRAIN, dtype=np.uint8) % N_CLASSES,
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(N_TEST, dtype=np.uint8) % N_CLASSES,
    }


FILENAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_dataset(directory: Path, arrays: dict[str, np.ndarray], *, compress: bool = True) -> None:
    """Write the four IDX files of `arrays` into `directory`."""
    suffix = ".gz" if compress else ""
    for role, array in arrays.items():
        write_idx(directory / f"{FILENAMES[role]}{suffix}", array)
