"""The API over a folder-trained colour run (issue 27): its classes, its recipe, and what the
model received, in colour; the garment run keeps its answers (test_serve_api.py).

The run is `colour_run.write_colour_run`: a tiny RGB model that answers a picture's main colour.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from colour_run import COLOUR_CLASSES, COLOUR_RECIPE, colour_picture, encoded
from fastapi.testclient import TestClient
from PIL import Image


def upload(data: bytes, name: str, kind: str = "image/jpeg") -> dict[str, object]:
    return {"files": {"file": (name, data, kind)}}


def decoded(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :])))


def test_model_info_reports_the_recipe_and_classes(colour_client: TestClient) -> None:
    info = colour_client.get("/api/model").json()
    assert info["classes"] == list(COLOUR_CLASSES)
    assert info["input"] == {
        "kind": "folder",
        "size": [16, 16],
        "color": "rgb",
        "resize": "squash",
        "drawing": False,
    }
    assert info["input_shape"] == [16, 16, 3]


def test_garment_run_reports_the_garment_recipe(client: TestClient) -> None:
    info = client.get("/api/model").json()
    assert info["input"] == {
        "kind": "garment",
        "size": [28, 28],
        "color": "grayscale",
        "resize": None,
        "drawing": True,
    }


def test_predict_answers_with_the_folder_classes(colour_client: TestClient) -> None:
    for colour in COLOUR_CLASSES:
        data = encoded(colour_picture(colour, (50, 37)), "jpeg")
        response = colour_client.post("/api/predict", **upload(data, f"{colour}.jpg"))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["label"] == colour and answer["box"] is None and not answer["blank"]
        assert {row["class"] for row in answer["top"]} == set(COLOUR_CLASSES)
    files = [
        ("files", (f"{colour}.png", encoded(colour_picture(colour), kind), "image/png"))
        for colour, kind in zip(COLOUR_CLASSES, ("png", "rgba", "palette"), strict=True)
    ]
    batch = colour_client.post("/api/predict/batch", files=files).json()["predictions"]
    assert [item["label"] for item in batch] == list(COLOUR_CLASSES)


def test_features_show_the_colour_input_the_model_received(colour_client: TestClient) -> None:
    """The input picture is an RGB PNG holding exactly the recipe's pixels (`Recipe.load` of
    the upload); `pixels` is null for a colour model."""
    data = encoded(colour_picture("blue", (33, 45), seed=3), "png")
    response = colour_client.post("/api/features", **upload(data, "blue.png", "image/png"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["prediction"]["label"] == "blue"
    assert answer["pixels"] is None
    assert answer["input"]["shape"] == [16, 16, 3]
    picture = decoded(answer["input"]["image"])
    assert picture.mode == "RGB" and picture.size == (16, 16)
    np.testing.assert_array_equal(np.asarray(picture), COLOUR_RECIPE.load(data))
    assert [(layer["name"], layer["shape"]) for layer in answer["layers"]] == [
        ("conv", [16, 16, 3])
    ]


def test_json_pixels_are_taken_as_grey_by_a_colour_model(colour_client: TestClient) -> None:
    """The JSON route's grey rows at the model's size still answer (grey in every channel)."""
    pixels = np.full((16, 16), 0.5).tolist()
    response = colour_client.post("/api/features", json={"pixels": pixels})
    assert response.status_code == 200, response.text
    picture = np.asarray(decoded(response.json()["input"]["image"]))
    assert picture.shape == (16, 16, 3) and (picture == 128).all()


def test_a_grayscale_folder_run_offers_drawing_and_grey_pixels(tmp_path: Path) -> None:
    """A one-channel folder model: drawing suits it, its input is grey and has `pixels`."""
    from cnnlab._backend import keras as _keras
    from cnnlab.data.folders import Recipe
    from cnnlab.runs import Run, RunState
    from cnnlab.serve import create_app

    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((12, 20, 1)),
            keras.layers.Conv2D(2, 3, padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    recipe = Recipe((12, 20), "grayscale", "pad")
    run = Run(tmp_path / "grey-run")
    run.make_dir()
    model.save(run.model_file)
    run.write_state(RunState(class_names=["dark", "light"], input_recipe=recipe.to_dict()))
    client = TestClient(create_app(run.dir))
    info = client.get("/api/model").json()
    assert info["input"] == {
        "kind": "folder",
        "size": [12, 20],
        "color": "grayscale",
        "resize": "pad",
        "drawing": True,
    }
    data = encoded(colour_picture("red", (30, 30)), "png")
    answer = client.post("/api/features", **upload(data, "red.png", "image/png")).json()
    picture = decoded(answer["input"]["image"])
    assert picture.mode == "L" and picture.size == (20, 12)
    expected = recipe.load(data)[:, :, 0]
    np.testing.assert_array_equal(np.asarray(picture), expected)
    np.testing.assert_allclose(answer["pixels"], np.round(expected / 255, 4), atol=1e-6)
