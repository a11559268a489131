"""Datasets: IDX files, where they are found, and numpy arrays ready for a model."""

from cnnlab.data.datasets import Dataset, Splits, describe, load_dataset, prepare
from cnnlab.data.idx import content_sha256, read_idx, write_idx
from cnnlab.data.sources import DATASETS, LocatedDataset, cache_dir, locate

__all__ = [
    "DATASETS",
    "Dataset",
    "LocatedDataset",
    "Splits",
    "cache_dir",
    "content_sha256",
    "describe",
    "load_dataset",
    "locate",
    "prepare",
    "read_idx",
    "write_idx",
]
