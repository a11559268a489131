"""GET /api/mistakes and /api/top-losses: the test images behind the confusion matrix, from the
outcomes `cnnlab evaluate` recorded, with the pictures the model saw."""

from __future__ import annotations

import base64
import importlib.util
import io
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from cnnlab.runs import Run
from cnnlab.serve import create_app

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnxruntime", "tf2onnx"))


@pytest.fixture(scope="module")
def evaluated(evaluated_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(evaluated_app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def folder_client(colour_folder_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(colour_folder_app, raise_server_exceptions=False) as client:
        yield client


def matrix_of(run: Path) -> tuple[list[str], list[list[int]]]:
    metrics = Run(run).metrics()
    assert metrics is not None
    return metrics["class_names"], metrics["confusion_matrix"]


def decoded(data_url: str) -> np.ndarray:
    """A data: URL's PNG as uint8 pixels (H, W, C)."""
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))))
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def as_seen(image: np.ndarray) -> np.ndarray:
    """A feed's model input in [0, 1] as the uint8 pixels it was made from."""
    return np.round(np.asarray(image, np.float64) * 255).astype(np.uint8)


def check_answer(answer: dict[str, Any], limit: int) -> None:
    """What every answer promises: at most `limit` images, in their order (a mistake cell the
    most confident first, otherwise highest loss first), each with its predicted class the
    most probable of its top-k, and the probabilities its loss says."""
    images = answer["images"]
    assert len(images) == min(answer["count"], limit)
    if answer["true"] is not None and answer["true"] != answer["predicted"]:
        confidence = [image["probability"] for image in images]
        assert confidence == sorted(confidence, reverse=True)
    else:
        losses = [image["loss"] for image in images]
        assert losses == sorted(losses, reverse=True)
    for image in images:
        top = image["top"]
        assert top[0]["class"] == image["predicted"]
        assert top[0]["probability"] == pytest.approx(image["probability"])
        assert [t["probability"] for t in top] == sorted(
            (t["probability"] for t in top), reverse=True
        )
        # the loss from float64, the probability kept to float16 (11 bits)
        assert np.exp(-image["loss"]) == pytest.approx(
            max(image["true_probability"], 1e-7), rel=2**-10, abs=2**-11
        )


def test_each_cell_lists_as_many_images_as_it_counts(
    evaluated: TestClient, evaluated_run: Path
) -> None:
    names, matrix = matrix_of(evaluated_run)
    limit = 5
    for truth, row in enumerate(matrix):
        for guess, count in enumerate(row):
            query = {"true": names[truth], "predicted": names[guess], "limit": limit}
            response = evaluated.get("/api/mistakes", params=query)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert (answer["true"], answer["predicted"], answer["count"]) == (
                names[truth],
                names[guess],
                count,
            )
            check_answer(answer, limit)
            assert {(i["true"], i["predicted"]) for i in answer["images"]} <= {
                (names[truth], names[guess])
            }


def test_the_pictures_are_the_test_images_the_model_saw(
    evaluated: TestClient, evaluated_run: Path
) -> None:
    x_test, y_test = Run(evaluated_run).data().arrays("test")
    names, _ = matrix_of(evaluated_run)
    answer = evaluated.get("/api/top-losses", params={"limit": 12}).json()
    assert answer["count"] == len(y_test)
    check_answer(answer, 12)
    seen = set()
    for image in answer["images"]:
        index = image["index"]
        seen.add(index)
        assert image["true"] == names[int(y_test[index])]
        assert image["path"] is None
        np.testing.assert_array_equal(decoded(image["image"]), as_seen(x_test[index]))
    assert len(seen) == 12


def test_a_class_can_be_named_by_its_index(evaluated: TestClient, evaluated_run: Path) -> None:
    names, _ = matrix_of(evaluated_run)
    by_index = evaluated.get("/api/mistakes", params={"true": 1, "predicted": "1"}).json()
    by_name = evaluated.get("/api/mistakes", params={"true": names[1], "predicted": names[1]})
    assert by_index == by_name.json()
    assert by_index["count"] > 0


def test_bad_requests_get_one_line(evaluated: TestClient, client: TestClient) -> None:
    unknown = evaluated.get("/api/mistakes", params={"true": "pink", "predicted": "top"})
    assert unknown.status_code == 404
    assert "no class 'pink'" in unknown.json()["detail"]
    assert "\n" not in unknown.json()["detail"]
    out_of_range = evaluated.get("/api/mistakes", params={"true": "99", "predicted": "top"})
    assert out_of_range.status_code == 404
    for limit in (0, 501, "many"):
        assert evaluated.get("/api/top-losses", params={"limit": limit}).status_code == 422
    assert evaluated.get("/api/mistakes", params={"predicted": "top"}).status_code == 422
    # The shared tiny run was never evaluated: no outcomes, and the hint that makes them.
    for route in ("/api/top-losses", "/api/mistakes?true=top&predicted=top"):
        response = client.get(route)
        assert response.status_code == 404
        assert "run `cnnlab evaluate" in response.json()["detail"]
    assert client.get("/api/model").json()["mistakes"] is False
    assert evaluated.get("/api/model").json()["mistakes"] is True


def test_a_dataset_that_moved_is_a_409(evaluated_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(evaluated_run, tmp_path / "tiny"))
    config = Run(run).config()
    Run(run).write_config(config.replace(data={"dataset": str(tmp_path / "gone.npz")}))
    with TestClient(create_app(run), raise_server_exceptions=False) as client:
        response = client.get("/api/top-losses")
    assert response.status_code == 409
    assert "gone.npz" in response.json()["detail"] and "\n" not in response.json()["detail"]


def test_a_run_evaluated_while_served_opens_its_mistakes(
    evaluated_run: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(evaluated_run, tmp_path / "tiny"))
    recorded = Run(run).test_predictions_file
    kept = recorded.read_bytes()
    recorded.unlink()
    with TestClient(create_app(run), raise_server_exceptions=False) as client:
        assert client.get("/api/top-losses").status_code == 404
        recorded.write_bytes(kept)
        assert client.get("/api/top-losses").status_code == 200


def test_the_routes_are_documented(evaluated: TestClient) -> None:
    paths = evaluated.get("/openapi.json").json()["paths"]
    parameters = {p["name"] for p in paths["/api/mistakes"]["get"]["parameters"]}
    assert {"true", "predicted", "limit"} <= parameters
    assert "409" in paths["/api/top-losses"]["get"]["responses"]


# --- A run trained on an image folder ------------------------------------------------------


def test_a_folder_runs_cells_open_their_pictures(
    folder_client: TestClient, colour_folder_run: Path
) -> None:
    """The colour folder's mislabelled test pictures (a green one filed as red, two blue ones
    as green) are the off-diagonal cells, and each picture is its file through the run's
    recipe."""
    names, matrix = matrix_of(colour_folder_run)
    feed = Run(colour_folder_run).data()
    x_test, _ = feed.arrays("test")
    paths = feed.split("test").paths
    stored = Run(colour_folder_run).test_predictions()
    assert stored is not None
    confusion = np.zeros_like(np.asarray(matrix))
    np.add.at(confusion, (stored["label"], stored["predicted"]), 1)
    assert confusion.tolist() == matrix
    for truth, guess, looks in (("red", "green", "green"), ("green", "blue", "blue")):
        count = matrix[names.index(truth)][names.index(guess)]
        answer = folder_client.get("/api/mistakes", params={"true": truth, "predicted": guess})
        assert answer.status_code == 200, answer.text
        answer = answer.json()
        assert answer["count"] == count == (2 if truth == "green" else 1)
        check_answer(answer, 24)
        for image in answer["images"]:
            index = image["index"]
            assert image["path"] == f"{paths[index].parent.parent.name}/{truth}/{paths[index].name}"
            assert image["path"].endswith(f"-{looks}.png")
            np.testing.assert_array_equal(decoded(image["image"]), as_seen(x_test[index]))
            assert decoded(image["image"]).shape == (16, 16, 3)


def test_a_folder_that_moved_is_a_409(colour_folder_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(colour_folder_run, tmp_path / "colour-run"))
    config = Run(run).config()
    moved = tmp_path / "moved"
    shutil.copytree(config.data.dataset, moved)
    stored = dict(np.load(Run(run).test_predictions_file))
    stored["root"] = np.array(str(tmp_path / "nowhere"))
    Run(run).write_test_predictions(stored)
    with TestClient(create_app(run), raise_server_exceptions=False) as client:
        Run(run).write_config(config.replace(data={"dataset": str(tmp_path / "nowhere")}))
        response = client.get("/api/top-losses")
        assert response.status_code == 409
        assert "nowhere" in response.json()["detail"]
        # config.toml naming where the folder is now is enough
        Run(run).write_config(config.replace(data={"dataset": str(moved)}))
        assert client.get("/api/top-losses").status_code == 200


@pytest.mark.skipif(not HAS_ONNX, reason="needs onnxruntime and tf2onnx")
def test_an_onnx_served_run_opens_its_mistakes(evaluated_run: Path, tmp_path: Path) -> None:
    from cnnlab.export import export

    run = Path(shutil.copytree(evaluated_run, tmp_path / "tiny"))
    onnx = export(run, ["onnx"])["onnx"]
    with TestClient(create_app(onnx), raise_server_exceptions=False) as client:
        assert client.get("/api/model").json()["backend"] == "onnxruntime"
        response = client.get("/api/top-losses", params={"limit": 3})
    assert response.status_code == 200
    assert len(response.json()["images"]) == 3


def test_a_large_picture_is_shrunk_and_a_small_one_kept_exactly() -> None:
    from cnnlab.serve.service import THUMBNAIL_SIDE, data_url, thumbnail_png

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(decoded(data_url(thumbnail_png(small))), small)
    large = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert decoded(data_url(thumbnail_png(large))).shape == (85, THUMBNAIL_SIDE, 3)
