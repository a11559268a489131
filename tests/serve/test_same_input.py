"""One conversion everywhere: the CLI, the Python API, the page's route, /api/predict and the
ONNX path give the model the same 28x28 input for the same file, and the same found box."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from photoset import make_photo
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.prediction.inference import load_predictor
from cnnlab.prediction.lite import OnnxPredictor
from cnnlab.prediction.predictor import Predictor
from cnnlab.prediction.preprocess import FRAMINGS, prepare_image, to_model_input

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnxruntime", "tf2onnx"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo-like JPEG: a shirt off-centre on paper, with a soft shadow beside it."""
    garment = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(garment).polygon([(8, 3), (20, 3), (26, 9), (20, 11), (20, 25), (8, 25)], 220)
    shot = make_photo(np.asarray(garment), "shadow", 1, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("photo") / "shirt.jpg"
    path.write_bytes(shot.jpeg())
    return path


@pytest.fixture
def model_inputs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[np.ndarray]]:
    """Every batch any predictor hands to its model (Keras or ONNX Runtime) while a test runs:
    both run their model through the base class's `_rows` (probabilities, and logits)."""
    seen: list[np.ndarray] = []
    real = Predictor._rows

    def recording(self: Predictor, batch: np.ndarray) -> Any:
        seen.append(np.array(batch, copy=True))
        return real(self, batch)

    monkeypatch.setattr(Predictor, "_rows", recording)
    yield seen


def test_every_path_gives_the_model_the_same_input(
    tiny_run: Path,
    client: TestClient,
    photo: Path,
    model_inputs: list[np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = prepare_image(photo).inputs  # the found box and its re-framings
    assert expected.shape == (len(FRAMINGS), 28, 28, 1)
    assert not np.array_equal(expected[0], expected[-1])  # re-framed, not copied
    np.testing.assert_array_equal(expected[0], to_model_input(photo))
    paths = {}

    load_predictor(tiny_run).predict([photo])  # Python API
    paths["python"] = model_inputs[-1][0]
    assert main(["predict", str(tiny_run), str(photo)]) == 0  # CLI
    paths["cli"] = model_inputs[-1][0]
    files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    assert client.post("/api/predict", files=files).status_code == 200
    paths["/api/predict"] = model_inputs[-1][0]
    features = client.post("/api/features", files=files).json()  # what the page asks
    paths["/api/features (the page)"] = model_inputs[-1][0]
    if HAS_ONNX:
        from cnnlab.export import export

        onnx = export(tiny_run, ["onnx"], out_dir=tmp_path)["onnx"]
        OnnxPredictor.load(onnx).predict([photo])
        paths["onnx"] = model_inputs[-1][0]
        assert main(["predict", str(onnx), str(photo)]) == 0
        paths["cli onnx"] = model_inputs[-1][0]
    capsys.readouterr()

    for name, array in paths.items():
        np.testing.assert_array_equal(array, expected, err_msg=name)
    shown = np.array(features["pixels"], np.float32)  # the 28x28 the page draws
    np.testing.assert_array_equal(shown, np.round(expected[0, :, :, 0], 4))
    assert expected.any() and len(paths) >= 4


def test_the_api_answers_the_found_box(tiny_run: Path, client: TestClient, photo: Path) -> None:
    box = prepare_image(photo).box
    assert box is not None
    files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    answer = client.post("/api/predict", files=files).json()
    features = client.post("/api/features", files=files).json()
    batch = client.post("/api/predict/batch", files=[("files", files["file"])]).json()
    pixels = client.post("/api/predict", json=np.zeros((28, 28)).tolist()).json()

    assert answer["box"] == list(box)
    assert features["prediction"]["box"] == list(box)
    assert batch["predictions"][0]["box"] == list(box)
    assert pixels["box"] is None  # a model-ready array has no picture to find a box in
    assert load_predictor(tiny_run).predict([photo])[0].to_dict()["box"] == list(box)
