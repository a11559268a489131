from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import make_images

from cnnlab.errors import CnnlabError
from cnnlab.model.builder import build_model
from cnnlab.prediction.inference import KerasPredictor, load_predictor, predict
from cnnlab.prediction.preprocess import FRAMINGS, prepare_image, prepare_whole_image


def _save(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_predicts_files_arrays_and_pil_images(tiny_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    images = make_images(np.array([0, 1, 2, 3]), rng)
    predictor = load_predictor(tiny_run)
    assert predictor.class_names == ["top", "bottom", "left", "right"]
    sources = [
        _save(tmp_path / "top.png", images[0]),
        Image.fromarray(images[1]),
        images[2].astype(np.float32) / 255,
        _save(tmp_path / "right.bmp", images[3]),
    ]
    results = predictor.predict(sources, top_k=2)
    assert [r.label for r in results] == ["top", "bottom", "left", "right"]
    for result in results:
        assert len(result.top) == 2 and result.top[0][1] >= result.top[1][1]
        assert abs(sum(result.probabilities) - 1) < 1e-5


def test_a_photo_is_predicted_as_the_mean_over_its_framings(tiny_run: Path, tmp_path: Path) -> None:
    canvas = np.full((120, 160), 215, np.uint8)
    garment = 255 - make_images(np.array([2]), np.random.default_rng(3))[0]
    canvas[20:104, 40:124] = np.asarray(Image.fromarray(garment).resize((84, 84)))
    photo = _save(tmp_path / "photo.png", canvas)
    predictor = load_predictor(tiny_run)

    framed = prepare_image(photo).inputs
    each = predictor.probabilities(framed)  # a 4-D batch: one row per framing
    (result,) = predictor.predict([photo], top_k=4)

    assert framed.shape[0] == len(FRAMINGS) and not np.array_equal(framed[0], framed[-1])
    np.testing.assert_allclose(result.probabilities, each.mean(axis=0), rtol=1e-6, atol=1e-7)


def test_a_bad_image_does_not_stop_the_others(tiny_run: Path, tmp_path: Path) -> None:
    good = _save(tmp_path / "good.png", make_images(np.array([1]), np.random.default_rng(1))[0])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    results = predict(tiny_run, [empty, good, tmp_path / "missing.jpg"])
    assert results[0].error and "empty.png" in results[0].error
    assert results[1].error is None and results[1].label == "bottom"
    assert results[2].error and "missing.jpg" in results[2].error
    assert results[0].to_dict() == {"source": str(empty), "error": results[0].error}


def test_a_fully_convolutional_model_predicts_whole_images_at_their_size(tmp_path: Path) -> None:
    model = build_model("fcn", (28, 28, 1), 10)
    predictor = KerasPredictor(model, [f"c{i}" for i in range(10)])
    assert predictor.any_input_size
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (40, 72), dtype=np.uint8)
    wide[:, :4] = wide[:, -4:] = wide[:4] = wide[-4:] = 0  # a black frame, as the data has
    path = _save(tmp_path / "wide.png", wide)
    tiny = _save(tmp_path / "tiny.png", wide[:20, :20])
    kept, small, square = predictor.predict([path, tiny, wide[:28, :28]], keep_size=True)
    direct = model.predict(prepare_whole_image(path).array[np.newaxis], verbose=0)[0]
    # Same model and input, but predict_on_batch and predict may pick different float32
    # kernels (summation order over 576-term dot products); that moves logits by ~1e-6 relative
    # and probabilities (~0.1 here) by less than 1e-6, so 1e-5 is safe on any CPU, and a wrong
    # input (the resized image, checked next) differs by more than 1e-4.
    np.testing.assert_allclose(kept.probabilities, direct, atol=1e-5)
    resized = predictor.predict([path])[0]  # the usual path trims and fits it into 28x28
    assert not np.allclose(resized.probabilities, kept.probabilities, atol=1e-4)
    assert small.error and "smaller than the 28x28" in small.error
    assert square.error is None and len(square.top) == 3


def test_keep_size_needs_a_model_with_open_height_and_width(tiny_run: Path) -> None:
    predictor = load_predictor(tiny_run)
    assert not predictor.any_input_size
    with pytest.raises(CnnlabError, match=r"takes 28x28 images only.*--preset fcn"):
        predictor.predict([np.zeros((28, 28), np.uint8)], keep_size=True)


def test_answers_are_marked_unsure_once_evaluated(evaluated_run: Path) -> None:
    import json

    from cnnlab.calibration import UnsureRule, energy

    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    predictor = load_predictor(evaluated_run)
    rule = predictor.unsure_rule
    assert rule == UnsureRule(
        metrics["temperature"], metrics["unsure_threshold"], metrics["unsure_energy_threshold"]
    )
    assert rule is not None and rule.energy_threshold is not None
    arrays = [
        a.astype(np.float32) / 255 for a in make_images(np.arange(4), np.random.default_rng(6))
    ]
    rng = np.random.default_rng(7)
    arrays.append(rng.random((28, 28), dtype=np.float32))  # noise: not one of the classes
    results = predictor.predict(arrays, top_k=2)
    assert predictor.with_logits is not None
    for array, result in zip(arrays, results, strict=True):
        (prepared,) = predictor.prepare([array])
        _, logits = predictor.with_logits.predict_on_batch(prepared.inputs)
        expected = energy(logits, rule.temperature).mean() > rule.energy_threshold
        assert result.unsure is bool(expected)
        assert result.to_dict()["unsure"] is result.unsure
    # The flag follows the rule: an energy threshold below any energy marks every answer, one
    # above all none; without the logits the probability threshold decides (above any
    # probability: all); without a rule (a run not evaluated) the answer has no "unsure" key.
    predictor.unsure_rule = UnsureRule(1.0, 0.0, -1e9)
    assert all(r.unsure for r in predictor.predict(arrays))
    predictor.unsure_rule = UnsureRule(1.0, 1.01, 1e9)
    assert not any(r.unsure for r in predictor.predict(arrays))
    predictor.with_logits = None
    assert all(r.unsure for r in predictor.predict(arrays))
    predictor.unsure_rule = UnsureRule(1.0, 0.0, -1e9)
    assert not any(r.unsure for r in predictor.predict(arrays))
    predictor.unsure_rule = None
    (plain,) = predictor.predict(arrays[:1])
    assert plain.unsure is None and set(plain.to_dict()) == {"source", "label", "top", "box"}
