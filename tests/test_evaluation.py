from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnlab.errors import RunError
from cnnlab.evaluation import classification_metrics, evaluate, format_report


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run: evaluating writes metrics.json, which the serve tests
    expect the shared run not to have."""
    import shutil

    return Path(shutil.copytree(tiny_run, tmp_path / "tiny"))


def test_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25]]
    )
    metrics = classification_metrics(y_true, probabilities, ["a", "b", "c"])
    assert metrics["test_accuracy"] == pytest.approx(3 / 5)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    a, b, c = metrics["per_class"]
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (b["precision"], b["recall"]) == pytest.approx((2 / 3, 1.0))
    assert b["f1"] == pytest.approx(0.8)
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    expected_loss = -np.mean(np.log([0.8, 0.3, 0.7, 0.8, 0.25]))
    assert metrics["test_loss"] == pytest.approx(expected_loss)
    report = format_report(metrics)
    assert "test accuracy 0.6000" in report and "confusion matrix" in report


def test_evaluate_a_run(run_copy: Path, tiny_npz: Path) -> None:
    tiny_run = run_copy
    metrics = evaluate(tiny_run)
    saved = json.loads((tiny_run / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert metrics["test_images"] == 80
    assert sum(map(sum, metrics["confusion_matrix"])) == 80
    # Agrees with Keras' own evaluation of the same model on the same images.
    import keras

    data = np.load(tiny_npz)
    model = keras.saving.load_model(tiny_run / "model.keras")
    x = (data["x_test"].astype("float32") / 255)[..., None]
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(x, data["y_test"], verbose=0)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)  # counts: exact
    # The loss of this easy task is near zero (about 1e-5), where relative error is meaningless:
    # Keras clips probabilities to [1e-7, 1 - 1e-7], cnnlab to [1e-7, 1], so a confident image
    # costs Keras up to 1e-7 more, and float32 resolves a probability near 1 only to 6e-8,
    # which a CPU's other kernels move (8.546e-6 vs 8.486e-6 seen on an AMD Zen 3). An absolute
    # 1e-6, ten times those, still catches a wrong loss (a mean of logs, not of probabilities,
    # misses by far more).
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-3, abs=1e-6)


def test_evaluate_needs_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a run folder"):
        evaluate(tmp_path)


def test_tta_averages_with_the_flipped_images(run_copy: Path, tiny_npz: Path) -> None:
    tiny_run = run_copy
    import keras

    metrics = evaluate(tiny_run, tta=True)
    data = np.load(tiny_npz)
    model = keras.saving.load_model(tiny_run / "model.keras")
    x = (data["x_test"].astype("float32") / 255)[..., None]
    averaged = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    expected = float((averaged.argmax(axis=1) == data["y_test"]).mean())
    assert metrics["tta"]["test_accuracy"] == pytest.approx(expected)
    # Left and right bars swap under a flip: averaging must hurt this tiny task, which shows
    # the flip really happened, and the plain figures are reported unchanged beside it.
    assert metrics["tta"]["test_accuracy"] < metrics["test_accuracy"]
    assert "test-time augmentation" in format_report(metrics)


def test_evaluate_reports_calibration(run_copy: Path, tiny_npz: Path) -> None:
    tiny_run = run_copy
    import keras

    from cnnlab.calibration import (
        energy,
        expected_calibration_error,
        fit_temperature,
        with_temperature,
    )
    from cnnlab.data.datasets import load_dataset, prepare
    from cnnlab.model.heads import with_logits

    metrics = evaluate(tiny_run)
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["ece_calibrated"] <= 1
    assert metrics["temperature"] > 0
    assert metrics["val_nll_calibrated"] <= metrics["val_nll"]
    # The temperature is fitted on the validation split the run trained with (a quarter of
    # the 240 training images, seed 7), not on the test set.
    assert metrics["calibration"]["validation_images"] == 60
    splits = prepare(load_dataset(str(tiny_npz)), validation_split=0.25, seed=7)
    model = keras.saving.load_model(tiny_run / "model.keras")
    val = np.asarray(model.predict(splits.x_val, verbose=0), dtype=np.float64)
    assert metrics["temperature"] == pytest.approx(fit_temperature(val, splits.y_val), rel=1e-3)
    test = np.asarray(model.predict(splits.x_test, verbose=0), dtype=np.float64)
    assert metrics["ece"] == pytest.approx(
        expected_calibration_error(test, splits.y_test), abs=1e-5
    )
    saved = json.loads((tiny_run / "metrics.json").read_text())
    assert saved["temperature"] == metrics["temperature"]
    assert sum(saved["calibration"]["before"]["counts"]) == 80
    assert "calibration: ECE" in format_report(metrics)
    # The unsure rule flags at most 5% of the validation images, and is kept for predict: by
    # the energy of the logits (the tiny model ends in Dense(softmax)), with the probability
    # threshold kept for a predictor without logits.
    assert metrics["unsure_score"] == "energy"
    assert metrics["val_unsure_share"] <= 0.05
    assert 0 <= metrics["test_unsure_share"] <= 1
    _, val_logits = with_logits(model).predict(splits.x_val, verbose=0)
    energies = energy(val_logits, metrics["temperature"])
    assert (energies > metrics["unsure_energy_threshold"]).mean() == pytest.approx(
        metrics["val_unsure_share"]
    )
    assert 0 < metrics["unsure_threshold"] <= 1
    confidence = with_temperature(val, metrics["temperature"]).max(axis=1)
    assert (confidence < metrics["unsure_threshold"]).mean() <= 0.05
    assert saved["unsure_energy_threshold"] == metrics["unsure_energy_threshold"]
    assert saved["unsure_threshold"] == metrics["unsure_threshold"]
    assert "unsure above energy" in format_report(metrics)


def test_no_validation_split_means_no_temperature() -> None:
    from cnnlab.evaluation import calibration_metrics, format_calibration

    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    result = calibration_metrics(labels, probabilities, np.zeros(0), np.zeros((0, 2)))
    # Bins of 1/15: 0.9 right, 0.6 wrong, 0.7 right, each a third: (0.1 + 0.6 + 0.3) / 3.
    assert result["ece"] == pytest.approx(1.0 / 3)
    assert result["temperature"] is None and result["unsure_threshold"] is None
    assert "after" not in result["calibration"]
    assert "no temperature fitted" in format_calibration(result)


def test_evaluate_records_each_test_image(evaluated_run: Path, tiny_npz: Path) -> None:
    """test_predictions.npz holds one row per test image, in the test set's order, whose
    labels and predictions make metrics.json's confusion matrix, and whose losses average to
    its test loss."""
    from cnnlab.runs import Run

    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    stored = Run(evaluated_run).test_predictions()
    assert stored is not None
    data = np.load(tiny_npz)
    n, classes = len(data["y_test"]), len(metrics["class_names"])
    assert stored["index"].tolist() == list(range(n))
    assert stored["label"].tolist() == data["y_test"].tolist()
    assert stored["class_names"].tolist() == metrics["class_names"]
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (stored["label"], stored["predicted"]), 1)
    assert confusion.tolist() == metrics["confusion_matrix"]
    probabilities = stored["probabilities"]
    assert probabilities.dtype == np.float16 and probabilities.shape == (n, classes)
    # float16 keeps 11 bits: each probability within 2**-11 of its own value, a sum of 4 of
    # them within 4 of those of 1.
    assert np.allclose(probabilities.astype(np.float64).sum(axis=1), 1.0, atol=4 * 2**-11)
    picked = probabilities[np.arange(n), stored["predicted"]]
    assert np.all(picked >= probabilities.max(axis=1))  # the prediction is the most probable
    loss = stored["loss"]
    assert loss.dtype == np.float32
    # Each loss is the float64 figure stored in float32 (relative 6e-8), so their mean is
    # metrics.json's test loss to far better than 1e-5; near zero, an absolute 1e-7.
    assert float(loss.astype(np.float64).mean()) == pytest.approx(
        metrics["test_loss"], rel=1e-5, abs=1e-7
    )
    true_p = probabilities[np.arange(n), stored["label"]].astype(np.float64)
    assert np.allclose(np.exp(-loss), np.maximum(true_p, 1e-7), rtol=2**-10, atol=2**-11)


def test_an_old_run_has_no_test_predictions(tiny_run: Path) -> None:
    from cnnlab.runs import Run

    assert Run(tiny_run).test_predictions() is None


def test_a_folder_runs_outcomes_name_their_files(tmp_path: Path) -> None:
    """A folder run's rows are its test files (index: the place in the test split; path:
    under the folder), also when a picture that decodes badly is skipped mid-stream."""
    import io
    import os

    from colour_run import colour_picture, write_colour_folder, write_evaluated_colour_run

    from cnnlab.runs import Run

    folder = write_colour_folder(tmp_path / "colours")
    encoded = io.BytesIO()
    colour_picture("red", (30, 30), seed=99).save(encoded, "PNG")
    (folder / "test" / "red" / "02a-cut.png").write_bytes(encoded.getvalue()[:-40])
    run = Run(write_evaluated_colour_run(tmp_path / "runs" / "colour", folder))
    stored = run.test_predictions()
    assert stored is not None
    paths = run.data().split("test").paths
    relative = [Path(os.path.relpath(p, folder)).as_posix() for p in paths]
    assert "test/red/02a-cut.png" in relative  # found unreadable only when decoded
    assert "test/red/02a-cut.png" not in stored["path"].tolist()
    assert len(stored["path"]) == 12 == json.loads(run.metrics_file.read_text())["test_images"]
    assert [relative[i] for i in stored["index"]] == stored["path"].tolist()
    assert Path(str(stored["root"])) == folder.absolute()
