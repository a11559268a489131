"""Loading datasets into validated arrays, and preparing model-ready splits."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from idx_files import N_TEST, N_TRAIN, Tiny, write_dataset
from PIL import Image

from cnnlab.data import Dataset, cache_dir, describe, load_dataset, prepare, write_idx
from cnnlab.errors import ConfigError, DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _indexed_dataset(n_train: int = 100, n_classes: int = 10) -> Dataset:
    """A dataset whose training image i has pixel value i at [0, 0], to track where it went."""
    x_train = np.zeros((n_train, 4, 4), np.uint8)
    x_train[:, 0, 0] = np.arange(n_train)
    x_train[:, 1, 1] = 255
    return Dataset(
        name="indexed",
        x_train=x_train,
        y_train=np.arange(n_train, dtype=np.int64) % n_classes,
        x_test=np.full((7, 4, 4), 255, np.uint8),
        y_test=np.arange(7, dtype=np.int64) % n_classes,
        class_names=tuple(str(index) for index in range(n_classes)),
        source="test",
    )


# --- IDX datasets -------------------------------------------------------------------------


def test_load_registered_idx_dataset(tiny: Tiny) -> None:
    shutil.copytree(tiny.good_dir, cache_dir("tiny"))
    dataset = load_dataset("tiny", download=False)
    np.testing.assert_array_equal(dataset.x_train, tiny.arrays["train_images"])
    np.testing.assert_array_equal(dataset.y_test, tiny.arrays["test_labels"])
    assert dataset.x_train.shape == (N_TRAIN, 28, 28)
    assert dataset.x_train.dtype == np.uint8
    assert dataset.y_train.dtype == np.int64
    assert dataset.class_names == tuple("0123456789")
    assert "cache" in dataset.source and "checksums ok" in dataset.source


def test_own_idx_files_through_data_dir(tiny: Tiny, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset("fashion-mnist", tiny.good_dir, download=False)
    assert dataset.name == "fashion_mnist"
    assert dataset.class_names[0] == "T-shirt/top"
    assert len(dataset.y_test) == N_TEST
    assert "checksums mismatch" in dataset.source
    assert "does not match" in caplog.text


def test_image_and_label_counts_must_match(tiny: Tiny, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    write_dataset(mine, tiny.arrays)
    write_idx(mine / "train-labels-idx1-ubyte.gz", tiny.arrays["train_labels"][:-1])
    with pytest.raises(DataError, match=r"train-images.*20 images but .*train-labels.*19 labels"):
        load_dataset("tiny", mine, download=False)


def test_labels_must_index_a_class(tiny: Tiny, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    write_dataset(mine, tiny.arrays)
    write_idx(mine / "t10k-labels-idx1-ubyte.gz", np.full(N_TEST, 10, np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels.*10\.\.10, outside the 10 classes"):
        load_dataset("tiny", mine, download=False)


def test_train_and_test_images_must_have_one_shape(tiny: Tiny, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    write_dataset(mine, tiny.arrays)
    write_idx(mine / "t10k-images-idx3-ubyte.gz", np.zeros((N_TEST, 14, 14), np.uint8))
    with pytest.raises(DataError, match=r"test images are \(14, 14\)"):
        load_dataset("tiny", mine, download=False)


def test_describe(tiny: Tiny) -> None:
    shutil.copytree(tiny.good_dir, cache_dir("tiny"))
    rows = describe("tiny", download=False)
    assert [row["role"] for row in rows] == [
        "train_images",
        "train_labels",
        "test_images",
        "test_labels",
    ]
    assert rows[0]["count"] == N_TRAIN and rows[0]["shape"] == (28, 28)
    assert rows[3]["count"] == N_TEST and rows[3]["shape"] == ()
    assert {row["origin"] for row in rows} == {"cache"}
    assert {row["checksum"] for row in rows} == {"ok"}
    assert {row["problem"] for row in rows} == {""}


def test_describe_lists_every_file_whatever_fails(tiny: Tiny, tmp_path: Path) -> None:
    folder = tmp_path / "given"
    shutil.copytree(tiny.good_dir, folder)
    (folder / "train-labels-idx1-ubyte.gz").unlink()  # missing
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08junk")  # corrupt
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(N_TEST, np.uint8))  # mismatch
    rows = {row["role"]: row for row in describe("tiny", folder, download=False)}
    assert list(rows) == ["train_images", "train_labels", "test_images", "test_labels"]
    assert [row["checksum"] for row in rows.values()] == ["ok", "FAILED", "FAILED", "mismatch"]
    assert rows["train_images"]["count"] == N_TRAIN and not rows["train_images"]["problem"]
    assert "not found" in rows["train_labels"]["problem"]
    assert "t10k-images" in rows["test_images"]["problem"]
    assert "does not match" in rows["test_labels"]["problem"]


def test_unknown_spec(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a known dataset"):
        load_dataset(str(tmp_path / "nothing.npz"))


# --- npz ------------------------------------------------------------------------------------


def _npz_arrays() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
        "y_train": np.arange(12) % 3,
        "x_test": rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
        "y_test": (np.arange(6) % 3).reshape(6, 1),
    }


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "colors.npz"
    np.savez(path, **_npz_arrays())
    dataset = load_dataset(str(path))
    assert dataset.x_train.shape == (12, 8, 8, 3)
    assert dataset.y_test.shape == (6,)
    assert dataset.class_names == ("0", "1", "2")
    np.savez(path, **_npz_arrays(), class_names=np.array(["red", "green", "blue"]))
    assert load_dataset(path).class_names == ("red", "green", "blue")


def test_npz_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    arrays = _npz_arrays()
    np.savez(path, x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError, match="missing arrays x_test, y_test"):
        load_dataset(path)
    np.savez(path, **{**arrays, "x_test": arrays["x_test"].astype(np.float32)})
    with pytest.raises(DataError, match="x_test has dtype float32"):
        load_dataset(path)
    np.savez(path, **arrays, class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"y_train\]: labels range 0\.\.2, outside the 2"):
        load_dataset(path)
    path.write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_dataset(path)


# --- image folders --------------------------------------------------------------------------


def _write_images(folder: Path, count: int, size: tuple[int, int] = (10, 12)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        color = (index * 20 % 256, 0, 0)
        suffix = (".png", ".jpg", ".bmp")[index % 3]
        Image.new("RGB", size, color).save(folder / f"{index}{suffix}")


def test_image_folder_holds_out_a_stratified_sixth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "shapes"
    _write_images(root / "circle", 12)
    _write_images(root / "square", 6, size=(30, 30))
    (root / "square" / "broken.png").write_bytes(b"not a png")
    (root / "square" / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(root)
    assert "broken.png" in caplog.text
    assert dataset.class_names == ("circle", "square")
    assert dataset.x_train.shape == (15, 28, 28) and dataset.x_test.shape == (3, 28, 28)
    assert np.bincount(dataset.y_test).tolist() == [2, 1]
    again = load_dataset(root)
    np.testing.assert_array_equal(again.x_test, dataset.x_test)
    assert load_dataset(root, image_size=None).x_train.shape[1:] == (12, 10)


def test_image_folder_with_train_and_test(tmp_path: Path) -> None:
    for split, count in (("train", 4), ("test", 2)):
        for name in ("a", "b"):
            _write_images(tmp_path / "set" / split / name, count)
    dataset = load_dataset(tmp_path / "set", image_size=(16, 8))
    assert dataset.x_train.shape == (8, 16, 8) and dataset.x_test.shape == (4, 16, 8)
    assert dataset.y_test.tolist() == [0, 0, 1, 1]
    shutil.rmtree(tmp_path / "set" / "test" / "b")
    with pytest.raises(DataError, match="differ"):
        load_dataset(tmp_path / "set")


def test_image_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    (tmp_path / "empty" / "b" / "notes.txt").write_text("not a picture")
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(tmp_path / "empty" / "a")


# --- prepare --------------------------------------------------------------------------------


def test_prepare_shapes_dtypes_ranges() -> None:
    splits = prepare(_indexed_dataset(), validation_split=0.2)
    assert splits.x_train.shape == (80, 4, 4, 1) and splits.x_val.shape == (20, 4, 4, 1)
    assert splits.x_test.shape == (7, 4, 4, 1)
    assert splits.input_shape == (4, 4, 1)
    for x in (splits.x_train, splits.x_val, splits.x_test):
        assert x.dtype == np.float32 and x.min() >= 0 and x.max() == 1
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert y.dtype == np.int32
    assert np.bincount(splits.y_val).tolist() == [2] * 10  # stratified


def test_prepare_is_deterministic_and_disjoint() -> None:
    dataset = _indexed_dataset()
    first, second = prepare(dataset, seed=3), prepare(dataset, seed=3)
    np.testing.assert_array_equal(first.x_val, second.x_val)
    assert not np.array_equal(first.x_val, prepare(dataset, seed=4).x_val)
    train_ids = np.rint(first.x_train[:, 0, 0, 0] * 255).astype(int)
    val_ids = np.rint(first.x_val[:, 0, 0, 0] * 255).astype(int)
    assert set(train_ids).isdisjoint(val_ids)
    assert sorted([*train_ids, *val_ids]) == list(range(100))
    np.testing.assert_array_equal(first.y_val, dataset.y_train[val_ids])


def test_prepare_limit_and_no_validation() -> None:
    dataset = _indexed_dataset()
    splits = prepare(dataset, validation_split=0, limit=30)
    assert splits.x_train.shape[0] == 30 and splits.x_val.shape == (0, 4, 4, 1)
    assert splits.y_val.shape == (0,)
    assert len(splits.x_test) == 7  # the test set is never limited
    assert prepare(dataset, validation_split=0.1, limit=30).x_val.shape[0] == 3


def test_prepare_keeps_colour_channels() -> None:
    dataset = _indexed_dataset()
    rgb = dataclasses.replace(
        dataset,
        x_train=np.stack([dataset.x_train] * 3, axis=-1),
        x_test=np.stack([dataset.x_test] * 3, axis=-1),
    )
    splits = prepare(rgb)
    assert splits.input_shape == (4, 4, 3) and splits.x_test.shape == (7, 4, 4, 3)


@pytest.mark.parametrize(
    "kwargs", [{"validation_split": 1.0}, {"validation_split": -0.1}, {"limit": 0}]
)
def test_prepare_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        prepare(_indexed_dataset(), **kwargs)  # type: ignore[arg-type]


# --- the real thing -------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's Fashion-MNIST not installed")
def test_real_fashion_mnist() -> None:
    rows = describe("fashion_mnist", download=False)
    assert {row["origin"] for row in rows} == {"system"}
    assert {row["checksum"] for row in rows} == {"ok"}
    dataset = load_dataset("fashion_mnist", download=False)
    assert dataset.x_train.shape == (60000, 28, 28) and dataset.x_test.shape == (10000, 28, 28)
    assert np.bincount(dataset.y_train).tolist() == [6000] * 10
    assert dataset.class_names[-1] == "Ankle boot"
