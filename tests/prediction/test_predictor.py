"""Tests for cnnlab.prediction.predictor: the one flow (prepare -> model -> rank) and its small
results.

Most tests use `Linear`, a predictor whose "model" is a few lines of NumPy, so the flow is
checked without Keras; the last ones use the tiny trained run and the server built on it.
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw

import cnnlab.data.images
import cnnlab.prediction.predictor
import cnnlab.prediction.preprocess
from cnnlab.errors import CnnlabError
from cnnlab.prediction.inference import KerasPredictor, load_predictor
from cnnlab.prediction.predictor import Prediction, Predictor, Prepared
from cnnlab.prediction.preprocess import (
    FRAMINGS,
    prepare_image,
    prepare_whole_image,
    to_model_input,
)
from cnnlab.runs import Run

SIZE = (28, 28)


class Linear(Predictor):
    """A predictor over a fixed NumPy function of the input: deterministic, no Keras."""

    backend = "numpy"

    def __init__(self, input_shape: tuple[int | None, ...] = (28, 28, 1), classes: int = 4):
        super().__init__(input_shape, None, classes)
        self.batches: list[tuple[int, ...]] = []
        self.inside = [0, 0]  # model calls running now, most at once
        self.delay = 0.0

    def _forward(self, batch: NDArray[np.float32]) -> Any:
        self.inside[0] += 1
        self.inside[1] = max(self.inside)
        time.sleep(self.delay)
        self.batches.append(batch.shape)
        half_h, half_w = batch.shape[1] // 2, batch.shape[2] // 2
        features = np.stack(
            [
                batch.mean(axis=(1, 2, 3)),
                batch.std(axis=(1, 2, 3)),
                batch[:, :half_h].mean(axis=(1, 2, 3)),
                batch[:, :, :half_w].mean(axis=(1, 2, 3)),
            ],
            axis=1,
        )[:, : len(self.class_names)]
        logits = 10 * features.astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.inside[0] -= 1
        return exp / exp.sum(axis=1, keepdims=True)


def photo(width: int = 90, height: int = 60, fill: int = 20) -> Image.Image:
    """A dark ellipse on a light background, off-centre: a box is found and re-framed."""
    image = Image.new("L", (width, height), 230)
    ImageDraw.Draw(image).ellipse((10, 8, width // 2 + 10, height - 12), fill=fill)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def model_ready_row() -> NDArray[np.uint8]:
    row = np.zeros(SIZE, np.uint8)
    row[5:20, 5:20] = 255
    return row


# --- Prepared: one per image, made once ------------------------------------------------------


def test_prepare_gives_one_prepared_per_image_in_order(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    photo().save(path)
    predictor = Linear()

    prepared = predictor.prepare([path, tmp_path / "missing.png", model_ready_row(), b""])

    assert [p.source for p in prepared] == [
        str(path),
        str(tmp_path / "missing.png"),
        "<array 28x28>",
        "<bytes>",
    ]
    good, missing, row, empty = prepared
    assert good.inputs is not None and good.inputs.shape == (len(FRAMINGS), *SIZE, 1)
    np.testing.assert_array_equal(good.inputs, prepare_image(path).inputs)
    assert good.box == prepare_image(path).box and good.error is None and not good.blank
    np.testing.assert_array_equal(good.model_input, to_model_input(path))
    assert row.inputs is not None and row.inputs.shape == (1, *SIZE, 1) and row.box is None
    np.testing.assert_array_equal(row.model_input, to_model_input(model_ready_row()))
    assert missing.inputs is None and missing.error and "missing.png" in missing.error
    assert empty.inputs is None and empty.error and "<bytes>" in empty.error
    with pytest.raises(CnnlabError, match=r"missing\.png"):
        missing.model_input  # noqa: B018 - the property raises


def test_a_blank_picture_is_prepared_as_blank() -> None:
    (blank,) = Linear().prepare([Image.new("L", (50, 50), 200)])
    assert blank.blank and blank.box is None and blank.error is None
    (prediction,) = Linear().predict([Image.new("L", (50, 50), 200)])
    assert prediction.blank and prediction.error is None and prediction.label is not None
    (seen,) = Linear().predict([photo()])
    assert not seen.blank


def test_the_models_channels_are_filled_from_grey() -> None:
    rgb = Linear(input_shape=(28, 28, 3))
    (prepared,) = rgb.prepare([photo()])
    assert prepared.inputs is not None and prepared.inputs.shape == (len(FRAMINGS), *SIZE, 3)
    np.testing.assert_array_equal(prepared.inputs[..., 0], prepared.inputs[..., 2])


def test_describe_source_runs_once_per_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    real = cnnlab.data.images.describe_source

    def counting(source: object) -> str:
        calls.append(source)
        return real(source)

    for module in (cnnlab.data.images, cnnlab.prediction.preprocess, cnnlab.prediction.predictor):
        monkeypatch.setattr(module, "describe_source", counting)
    path = tmp_path / "photo.png"
    photo().save(path)
    images = [path, png(photo()), photo(), model_ready_row(), b"junk"]

    Linear().predict(images)
    assert len(calls) == len(images)
    calls.clear()
    Linear(input_shape=(None, None, 1)).predict(images[:3], keep_size=True)
    assert len(calls) == 3
    calls.clear()
    Linear().predict(images, sources=[f"{i}.png" for i in range(len(images))])
    assert calls == []  # named by the caller: nothing left to describe


# --- Predict: one batch, ranked, errors in their place ---------------------------------------


def test_a_bad_image_gets_its_error_and_the_others_one_batch(tmp_path: Path) -> None:
    predictor = Linear()
    results = predictor.predict([photo(), tmp_path / "missing.png", model_ready_row()], top_k=2)

    assert predictor.batches == [(2 * len(FRAMINGS), *SIZE, 1)]  # one model call, framings flat
    assert results[1].error and "missing.png" in results[1].error and not results[1].top
    assert results[1].to_dict() == {"source": results[1].source, "error": results[1].error}
    for result in (results[0], results[2]):
        assert result.error is None and len(result.top) == 2
        assert abs(sum(result.probabilities) - 1) < 1e-9
    # the model-ready array's one framing, repeated to line up, averages to its own answer
    alone = predictor.probabilities(to_model_input(model_ready_row())[np.newaxis])[0]
    np.testing.assert_allclose(results[2].probabilities, alone, rtol=1e-12)


def test_the_answer_is_the_mean_over_the_framings() -> None:
    predictor = Linear()
    (prepared,) = predictor.prepare([photo()])
    assert prepared.inputs is not None
    each = predictor.probabilities(prepared.inputs)  # a 4-D batch: one row per framing
    (result,) = predictor.predict([photo()], top_k=4)
    np.testing.assert_allclose(result.probabilities, each.mean(axis=0), rtol=1e-12)
    assert result.box == prepared.box is not None


def test_nothing_good_runs_no_model() -> None:
    predictor = Linear()
    assert [r.error is not None for r in predictor.predict([b"junk", b""])] == [True, True]
    assert predictor.batches == []
    assert predictor.predict([]) == []


@pytest.mark.parametrize(("asked", "given"), [(1, 1), (3, 3), (4, 4), (50, 4), (0, 1)])
def test_top_k_is_between_one_and_the_number_of_classes(asked: int, given: int) -> None:
    (result,) = Linear().predict([photo()], top_k=asked)
    assert len(result.top) == given
    assert [p for _, p in result.top] == sorted(result.probabilities, reverse=True)[:given]


def test_keep_size_goes_through_the_same_flow() -> None:
    predictor = Linear(input_shape=(None, None, 1))
    big = np.zeros((60, 90), np.uint8)
    big[10:40, 50:75] = 200
    results = predictor.predict([big, np.zeros((20, 20), np.uint8), photo()], keep_size=True)

    (prepared,) = predictor.prepare([big], keep_size=True)
    assert prepared.inputs is not None and prepared.inputs.shape == (1, 60, 90, 1)
    assert prepared.box is None  # the whole picture: no box was cut out of it
    np.testing.assert_array_equal(prepared.model_input, prepare_whole_image(big).array)
    direct = predictor.probabilities(prepared.inputs)[0]
    np.testing.assert_allclose(results[0].probabilities, direct, rtol=1e-12)
    assert results[1].error and "smaller than the 28x28" in results[1].error
    assert results[2].error is None and results[2].box is None
    with pytest.raises(CnnlabError, match="takes 28x28 images only"):
        Linear().predict([big], keep_size=True)


def test_prediction_to_dict_is_what_the_cli_prints() -> None:
    prediction = Prediction(
        "a.png", top=[("x", 0.75)], probabilities=[0.75, 0.25], box=(1, 2, 3, 4)
    )
    prediction.blank = True  # not part of the CLI's JSON
    assert prediction.to_dict() == {
        "source": "a.png",
        "label": "x",
        "top": [{"class": "x", "probability": 0.75}],
        "box": [1, 2, 3, 4],
    }
    assert Prepared("b.png", error="b.png: broken").blank is False


# --- Threads: the lock is around the model call only -----------------------------------------


def test_the_model_runs_one_call_at_a_time_and_answers_as_alone() -> None:
    predictor = Linear()
    predictor.delay = 0.002  # a slow model: threads meet
    pictures = [photo(90 + 4 * i, 60 + 2 * i, fill=10 * i) for i in range(8)]
    alone = [predictor.predict([picture])[0] for picture in pictures]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda i: predictor.predict([pictures[i % 8]])[0], range(48)))
    assert together == alone * 6
    assert predictor.inside[1] == 1


def test_preparing_pictures_does_not_wait_for_the_model() -> None:
    predictor = Linear()
    # as if another thread were running the model: preparing still goes ahead
    with predictor.model_lock, ThreadPoolExecutor(max_workers=1) as pool:
        prepared = pool.submit(predictor.prepare, [photo()]).result(timeout=30)
    assert prepared[0].error is None


def test_a_keras_predictor_from_8_threads_answers_as_alone(tiny_run: Path) -> None:
    predictor = load_predictor(tiny_run)
    pictures = [photo(80 + 6 * i, 64, fill=15 * i) for i in range(8)] + [model_ready_row()]
    alone = [predictor.predict([picture], top_k=4)[0] for picture in pictures]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(
            pool.map(lambda i: predictor.predict([pictures[i % 9]], top_k=4)[0], range(36))
        )
    assert together == alone * 4  # bit-identical probabilities and the same boxes


# --- Loading: the run opened once ------------------------------------------------------------


@pytest.fixture
def run_opens(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    opened: list[object] = []
    real = Run.open.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Run], path: Any) -> Run:
        opened.append(path)
        return real(cls, path)  # type: ignore[no-any-return]

    monkeypatch.setattr(Run, "open", classmethod(counting))
    return opened


def test_load_predictor_opens_the_run_once(tiny_run: Path, run_opens: list[object]) -> None:
    predictor = load_predictor(tiny_run)
    assert len(run_opens) == 1 and predictor.class_names == ["top", "bottom", "left", "right"]
    run_opens.clear()
    load_predictor(tiny_run / "model.keras")
    assert len(run_opens) == 1
    run_opens.clear()
    assert KerasPredictor.load(Run.open(tiny_run)).name == predictor.name
    assert len(run_opens) == 1  # the Run given is used as it is


def test_the_server_opens_the_run_once(tiny_run: Path, run_opens: list[object]) -> None:
    from cnnlab.serve import create_app

    create_app(tiny_run)
    assert len(run_opens) == 1


# --- The server answers with the predictor's own results -------------------------------------


@pytest.fixture(scope="module")
def served(tiny_run: Path) -> Any:
    from cnnlab.serve import create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2")
        from fastapi.testclient import TestClient

    app = create_app(tiny_run)
    with TestClient(app) as client:
        yield app, client


def _as_answer(prediction: Prediction) -> dict[str, Any]:
    return {
        "source": prediction.source,
        "label": prediction.label,
        "top": [{"class": c, "probability": p} for c, p in prediction.top],
        "blank": prediction.blank,
        "box": None if prediction.box is None else list(prediction.box),
        "unsure": prediction.unsure,  # null unless the run was evaluated
    }


def test_api_predict_is_the_predictors_predict(served: Any) -> None:
    app, client = served
    predictor = app.state.service.predictor
    for name, data in [("photo.png", png(photo())), ("blank.png", png(Image.new("L", (40, 40))))]:
        answer = client.post("/api/predict", files={"file": (name, data, "image/png")})
        expected = predictor.predict([data], top_k=3, sources=[name])[0]
        assert answer.status_code == 200 and answer.json() == _as_answer(expected)
    batch = client.post(
        "/api/predict/batch?top_k=2",
        files=[("files", ("a.png", png(photo()), "image/png")), ("files", ("b.png", b"x", "x"))],
    ).json()["predictions"]
    (expected,) = predictor.predict([png(photo())], top_k=2, sources=["a.png"])
    answer = _as_answer(expected)
    del answer["blank"]  # a batch item has no blank
    assert batch[0] == {**answer, "error": None, "status": None}
    assert batch[1]["status"] == 415 and batch[1]["label"] is None


def test_api_features_is_the_predictors_features(served: Any) -> None:
    app, client = served
    predictor = app.state.service.predictor
    data = png(photo())
    answer = client.post("/api/features", files={"file": ("p.png", data, "image/png")}).json()
    found = predictor.features(data, 3, source="p.png")
    assert answer["prediction"] == _as_answer(found.prediction)
    assert found.prediction == predictor.predict([data], sources=["p.png"])[0]
    np.testing.assert_array_equal(found.model_input, predictor.prepare([data])[0].model_input)
    assert answer["pixels"] == np.round(found.model_input[:, :, 0], 4).tolist()
    assert [(layer["name"], layer["kind"]) for layer in answer["layers"]] == [
        (name, kind) for name, kind, _ in found.layers
    ]
    assert [kind for _, kind, _ in found.layers] == ["Conv2D", "MaxPooling2D"]


def test_a_bad_single_image_is_a_422_with_the_predictors_error(served: Any) -> None:
    app, client = served
    cut = png(photo())[:60]
    expected = app.state.service.predictor.predict([cut], sources=["cut.png"])[0].error
    for route in ("/api/predict", "/api/features"):
        answer = client.post(route, files={"file": ("cut.png", cut, "image/png")})
        assert answer.status_code == 422 and answer.json()["detail"] == expected


def test_the_lock_is_the_predictors_own(served: Any) -> None:
    app, _ = served
    predictor = app.state.service.predictor
    assert isinstance(predictor.model_lock, type(threading.Lock()))
    assert not hasattr(app.state.service, "probabilities")  # no second prediction flow
