"""`--preset fcn` on the real data: a garment anywhere on a larger canvas is still read.

A short training (a few thousand images, a few epochs) is enough to show the property the
preset is built for: accuracy on a 56x56 or 84x84 canvas with the garment at a random place is
about what it is on the 28x28 image itself (global max pooling does not care how much
background there is; RandomCanvas taught it what background and half-seen garments look like).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_integration import (
    SYSTEM,
    pytestmark,  # noqa: F401  (pytest reads it: integration, skip-if)
    train_on_real_data,
)

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.prediction.inference import KerasPredictor

TEST_IMAGES = 1000


@pytest.fixture(scope="module")
def fcn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`--preset fcn` trained for 3 epochs on a 5,000-image slice of the real data."""
    return train_on_real_data(tmp_path_factory.mktemp("runs"), limit=5000, epochs=3, preset="fcn")


def _on_canvas(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((len(images), size, size, 1), np.float32)
    for out, image in zip(canvas, images, strict=True):
        row, col = rng.integers(0, size - 28 + 1, 2)
        out[row : row + 28, col : col + 28] = image
    return canvas


def test_a_garment_anywhere_on_a_larger_canvas_is_read_as_well(fcn_run: Path) -> None:
    data = load_dataset("fashion_mnist", str(SYSTEM), download=False)
    x = data.x_test[:TEST_IMAGES].astype(np.float32)[..., np.newaxis] / 255
    y = data.y_test[:TEST_IMAGES]
    model = KerasPredictor.load(fcn_run).model
    rng = np.random.default_rng(0)
    accuracy = {
        size: float(np.mean(model.predict(_on_canvas(x, size, rng), verbose=0).argmax(1) == y))
        for size in (28, 56, 84)
    }
    assert accuracy[28] > 0.6, accuracy  # chance is 0.1
    for size in (56, 84):  # global average pooling lost 50 to 70 points here
        assert accuracy[size] > accuracy[28] - 0.08, accuracy


def test_predict_keep_size_reads_a_picture_as_it_is(
    fcn_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_dataset("fashion_mnist", str(SYSTEM), download=False)
    canvas = np.zeros((84, 84), np.uint8)
    canvas[50:78, 6:34] = data.x_test[0].reshape(28, 28)
    path = tmp_path / "corner.png"
    Image.fromarray(canvas).save(path)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(canvas[:20, :20]).save(tiny)
    code = main(["predict", str(fcn_run), str(path), str(tiny), "--keep-size", "--json"])
    out, err = capsys.readouterr()
    assert code != 0 and "tiny.png" in err and len(err.strip().splitlines()) == 1
    assert '"label"' in out and "corner.png" in out
