"""keep_size in the API: a fully convolutional model sees an uploaded picture at its own size."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import png_bytes

from cnnlab.errors import CnnlabError
from cnnlab.model.builder import build_model
from cnnlab.prediction.inference import KerasPredictor
from cnnlab.prediction.preprocess import prepare_whole_image
from cnnlab.serve import create_app

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

CLASSES = 10


@pytest.fixture(scope="module")
def fcn_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained, seeded) fully convolutional model saved as a .keras file."""
    import keras

    keras.utils.set_random_seed(5)
    path = tmp_path_factory.mktemp("fcn") / "model.keras"
    build_model("fcn", (28, 28, 1), CLASSES).save(path)
    return path


@pytest.fixture(scope="module")
def picture() -> bytes:
    """A 60x90 picture: a light rectangle off-centre on a black background."""
    array = np.zeros((60, 90), np.uint8)
    array[10:40, 50:75] = 200
    return png_bytes(array)


def _client(path: Path, **options: object) -> Iterator[TestClient]:
    with TestClient(create_app(path, **options), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def client(fcn_file: Path) -> Iterator[TestClient]:
    yield from _client(fcn_file)


def _probabilities(answer: dict) -> list[float]:
    by_class = {item["class"]: item["probability"] for item in answer["top"]}
    return [by_class[str(i)] for i in range(CLASSES)]


def test_keep_size_predicts_the_whole_picture(
    client: TestClient, fcn_file: Path, picture: bytes
) -> None:
    files = {"file": ("shirt.png", picture, "image/png")}
    whole = client.post(f"/api/predict?keep_size=true&top_k={CLASSES}", files=files)
    shrunk = client.post(f"/api/predict?top_k={CLASSES}", files=files)
    assert whole.status_code == 200 and shrunk.status_code == 200, whole.text
    predictor = KerasPredictor.load(fcn_file)
    array = prepare_whole_image(picture).array
    expected = predictor.probabilities(array[np.newaxis])[0]
    np.testing.assert_allclose(_probabilities(whole.json()), expected, atol=1e-5)
    assert not np.allclose(_probabilities(shrunk.json()), expected, atol=1e-4)
    assert client.get("/api/model").json()["keep_size"] is False


def test_keep_size_in_a_batch_and_one_bad_picture(client: TestClient, picture: bytes) -> None:
    tiny = png_bytes(np.zeros((20, 20), np.uint8))
    files = [
        ("files", ("big.png", picture, "image/png")),
        ("files", ("tiny.png", tiny, "image/png")),
    ]
    answer = client.post("/api/predict/batch?keep_size=true", files=files).json()["predictions"]
    assert answer[0]["label"] is not None and answer[0].get("error") is None
    assert answer[1]["status"] == 422 and "tiny.png" in answer[1]["error"]
    assert "\n" not in answer[1]["error"]


def test_keep_size_refuses_pictures_outside_28_to_1024(client: TestClient) -> None:
    for shape in ((20, 40), (30, 1100)):
        data = png_bytes(np.zeros(shape, np.uint8))
        files = {"file": ("odd.png", data, "image/png")}
        response = client.post("/api/predict?keep_size=true", files=files)
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert "odd.png" in detail and "\n" not in detail


def test_the_server_default_and_the_features_route(fcn_file: Path, picture: bytes) -> None:
    for client in _client(fcn_file, keep_size=True):
        assert client.get("/api/model").json()["keep_size"] is True
        files = {"file": ("shirt.png", picture, "image/png")}
        features = client.post("/api/features", files=files).json()
        assert features["input"]["shape"] == [60, 90, 1]  # the page sees what the model saw
        kept = client.post(f"/api/predict?top_k={CLASSES}", files=files).json()
        asked = client.post(f"/api/predict?keep_size=true&top_k={CLASSES}", files=files).json()
        assert kept == asked
        shrunk = client.post("/api/features?keep_size=false", files=files).json()
        assert shrunk["input"]["shape"] == [28, 28, 1]


def test_a_fixed_size_model_refuses_keep_size_in_one_line(tiny_run: Path) -> None:
    with pytest.raises(CnnlabError, match=r"takes 28x28 images only.*--preset fcn"):
        create_app(tiny_run, keep_size=True)
    for client in _client(tiny_run):
        data = png_bytes(np.zeros((28, 28), np.uint8))
        files = {"file": ("a.png", data, "image/png")}
        response = client.post("/api/predict?keep_size=true", files=files)
        assert response.status_code == 400
        assert "takes 28x28 images only" in response.json()["detail"]
        assert client.post("/api/predict", files=files).status_code == 200


def test_cnnlab_serve_keep_size_with_a_fixed_size_model_is_one_line(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnlab.cli import main

    assert main(["serve", str(tiny_run), "--keep-size", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "takes 28x28 images only" in err
