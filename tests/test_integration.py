"""The whole pipeline on the real Fashion-MNIST files: train, evaluate, predict.

Uses Debian's dataset-fashion-mnist package (installed by scripts/setup.sh); skipped where the
files are not on this machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.data import load_dataset
from cnnlab.evaluation import evaluate
from cnnlab.prediction.inference import load_predictor
from cnnlab.runs import Run
from cnnlab.training.trainer import train

SYSTEM = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SYSTEM.is_dir(), reason="dataset-fashion-mnist is not installed"),
]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed model trained for one epoch on a 2,000-image slice of the real data."""
    return train_on_real_data(tmp_path_factory.mktemp("runs"), limit=2000, epochs=1)


def train_on_real_data(
    runs_dir: Path, *, limit: int, epochs: int, preset: str | None = None
) -> Path:
    """A short seeded training on the first `limit` real training images; its run folder."""
    overrides = {
        "data.limit": limit,
        "data.data_dir": str(SYSTEM),
        "data.download": False,
        "train.epochs": epochs,
        "train.seed": 0,
        "run.runs_dir": str(runs_dir),
    }
    return train(load_config(preset=preset, overrides=overrides)).run_dir


def test_trains_the_seed_model_on_real_data(real_run: Path) -> None:
    [row] = Run(real_run).history()
    assert row["accuracy"] > 0.3  # chance is 0.1: one epoch on 1,800 images learns something
    summary = (real_run / "summary.txt").read_text()
    assert "Basic_CNN_model" in summary and "73,834" in summary


def test_evaluates_on_all_10000_test_images(real_run: Path) -> None:
    metrics = evaluate(real_run)
    assert metrics["test_images"] == 10_000
    assert metrics["class_names"][0] == "T-shirt/top" and metrics["class_names"][9] == "Ankle boot"
    assert 0.5 < metrics["test_accuracy"] < 1.0
    assert [row["support"] for row in metrics["per_class"]] == [1000] * 10


def test_predicts_real_images_saved_as_files(
    real_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_dataset("fashion_mnist", SYSTEM, download=False)
    # A test image as the grayscale PNG it came from, and the same image as a "product photo":
    # enlarged, dark-on-white, RGB JPEG. Preprocessing must bring both back to the same class.
    index = int(np.flatnonzero(data.y_test == 1)[0])  # a trouser: an easy class
    original = data.x_test[index]
    png = tmp_path / "trouser.png"
    Image.fromarray(original).save(png)
    photo = tmp_path / "trouser-photo.jpg"
    Image.fromarray(255 - original).resize((280, 280)).convert("RGB").save(photo, quality=90)

    predictor = load_predictor(real_run)
    direct, from_photo = predictor.predict([png, photo])
    assert direct.label == "Trouser"
    assert from_photo.label == "Trouser"

    assert main(["predict", str(real_run), str(png), str(photo)]) == 0
    out = capsys.readouterr().out
    assert out.count("Trouser") >= 2


def test_predicts_photo_like_pictures_of_real_test_images(real_run: Path, tmp_path: Path) -> None:
    from photoset import CONDITIONS, make_photo

    data = load_dataset("fashion_mnist", SYSTEM, download=False)
    predictor = load_predictor(real_run)
    # Test images this small model gets right with confidence, one per condition; each drawn
    # as a photo under its condition (severity 1) and saved as the JPEG a user would have.
    raw = predictor.probabilities(data.x_test[:500, :, :, np.newaxis] / np.float32(255))
    sure = np.flatnonzero((raw.argmax(axis=1) == data.y_test[:500]) & (raw.max(axis=1) > 0.9))
    rng = np.random.default_rng(0)
    paths, expected = [], []
    for condition, index in zip(CONDITIONS, sure, strict=False):
        path = tmp_path / f"{condition}.jpg"
        path.write_bytes(make_photo(data.x_test[index], condition, 1, rng).jpeg())
        paths.append(path)
        expected.append(predictor.class_names[data.y_test[index]])
    assert len(paths) == len(CONDITIONS)

    labels = [p.label for p in predictor.predict(paths)]

    right = sum(label == want for label, want in zip(labels, expected, strict=True))
    assert right >= len(paths) - 3, list(
        zip([p.name for p in paths], labels, expected, strict=True)
    )
