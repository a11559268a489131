"""Every command once, on the Keras backend named by $KERAS_BACKEND, in this process.

Run by tests/test_backends.py in a fresh process per backend (Keras reads KERAS_BACKEND once,
at import): `python tests/backend_flow.py WORK_DIR [KIND ...]`. Prints one JSON line of what
each step gave; exits non-zero at the first step that fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from synthetic import TINY_ARCH, make_images, write_tiny_npz

from cnnlab import cli


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def main(work: Path, kinds: list[str]) -> dict[str, object]:
    rng = np.random.default_rng(0)
    npz, arch = work / "tiny.npz", work / "tiny.toml"
    write_tiny_npz(npz, rng, train_per_class=40, test_per_class=10)
    arch.write_text(TINY_ARCH)
    image = work / "bottom.png"
    Image.fromarray(make_images(np.array([1]), rng)[0]).save(image)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    report: dict[str, object] = {}

    def step(name: str, *argv: str) -> str:
        code, out, err = _cli(*argv)
        report[name] = code
        if code != 0:
            print(json.dumps(report))
            sys.exit(f"{name} failed ({code}): {err.strip()[-2000:]}")
        return out + err

    run = work / "runs" / "tiny"
    log = step(
        "train",
        *("train", "--dataset", str(npz), "--model", str(arch), "--epochs", "1", "--seed", "3"),
        *("--learning-rate", "0.01", "--init-filters", "random", "--validation-split", "0.25"),
        *("--runs-dir", str(work / "runs"), "--name", "tiny", "--tensorboard-histograms"),
    )
    report["backend_line"] = next(line for line in log.splitlines() if "Keras backend" in line)
    report["config_backend"] = "backend" in (run / "config.toml").read_text()
    report["run_json_backend"] = json.loads((run / "run.json").read_text())["backend"]
    step("evaluate", "evaluate", str(run), "--json")
    report.update(_tensorboard(run))
    predicted = step("predict", "predict", str(run), str(image), "--json")
    report["predicted"] = json.loads(predicted[: predicted.rindex("]") + 1])[0]["label"]
    for kind in kinds:
        extra = [str(image)] if kind in ("features", "gradcam") else []
        if kind == "convpool":
            step(f"visualize {kind}", "visualize", kind, str(image), "-o", str(work / "cp.png"))
        else:
            step(f"visualize {kind}", "visualize", kind, str(run), *extra)
    if backend != "tensorflow":  # TensorFlow's exports have their own tests (test_export.py)
        code, _, err = _cli("export", str(run), "--format", "onnx", "-o", str(work / "export"))
        errors = [line for line in err.splitlines() if line.startswith("cnnlab: error")]
        report["export_onnx"] = [code, errors]
        if code == 0:
            from cnnlab.prediction.inference import load_predictor

            onnx = load_predictor(work / "export" / "model.onnx").predict([image])[0]
            report["export_onnx_predicted"] = onnx.label

    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    with TestClient(create_app(run)) as client:
        answer = client.post(
            "/api/predict", content=image.read_bytes(), headers={"content-type": "image/png"}
        )
        report["serve"] = [answer.status_code, answer.json().get("label")]
    report.update(_explainer_flow(run, image))
    report.update(_folder_flow(work, step))
    report.update(_fine_tune_flow(work, run, step))
    return report


def _explainer_flow(run: Path, image: Path) -> dict[str, object]:
    """Issue 29: explained cells against the layer's own output on this backend, in float32
    (a 'same' conv's edge cell, a strided 'valid' conv, max and average pooling windows), and
    one cell of the trained tiny run through the API. Each check: |explained - Keras| over the
    size of the terms summed (1e-5 allows float32 sums in any order)."""
    from fastapi.testclient import TestClient

    from cnnlab._backend import dtype_policy, keras
    from cnnlab.prediction.arithmetic import explain_cell
    from cnnlab.serve import create_app

    layers = keras().layers
    cases = {
        "same conv, edge cell": (layers.Conv2D(3, 3, padding="same", activation="relu"), (0, 4, 2)),
        "valid strided conv": (layers.Conv2D(2, 3, strides=2), (2, 1, 1)),
        "max pooling": (layers.MaxPooling2D(2), (1, 2, 0)),
        "average pooling, same": (layers.AveragePooling2D(2, padding="same"), (3, 3, 1)),
    }
    rng = np.random.default_rng(6)
    picture = rng.uniform(0, 1, size=(7, 7, 3)).astype(np.float32)
    errors = {}
    for name, (layer, (row, col, channel)) in cases.items():
        with dtype_policy("float32"):
            model = keras().Sequential([keras().Input(picture.shape), layer])
        for weight in model.weights:
            weight.assign(rng.normal(size=weight.shape).astype(np.float32))
        expected = float(keras().ops.convert_to_numpy(model(picture[None]))[0, row, col, channel])
        cell = explain_cell(model, picture, layer.name, row, col, channel)
        terms = cell.patch * (1 if cell.kernel is None else cell.kernel)
        errors[name] = abs(cell.value - expected) / (np.abs(terms).sum() + abs(cell.bias))
    with TestClient(create_app(run)) as client:
        answer = client.post(
            "/api/explain/cell",
            params={"layer": "conv2d", "row": 0, "col": 25, "channel": 1},
            files={"file": (image.name, image.read_bytes(), "image/png")},
        )
    return {
        "explainer_relative_errors": errors,
        "explainer_serve": [answer.status_code, answer.json().get("agrees")],
    }


def _tensorboard(run: Path) -> dict[str, object]:
    """Issue 30: the run's event files, read back with TensorBoard's reader: the curves equal
    history.csv, a histogram per weight per epoch, and evaluate's test run."""
    from boards import board_mismatches, read_board

    train = read_board(run / "logs", "train")
    histograms = [points for tag, points in train.items() if tag.endswith("/histogram")]
    return {
        "tensorboard_mismatches": board_mismatches(run),
        "tensorboard_histogram_steps": sorted({str([s for s, _ in h]) for h in histograms}),
        "tensorboard_test": sorted(read_board(run / "logs", "test")),
    }


def _fine_tune_flow(work: Path, source: Path, step: Any) -> dict[str, object]:
    """Issue 28: a 2-class head on the 4-class tiny run (vertical vs horizontal bars), its
    frozen layers kept during the head epoch, everything trained after it."""
    rng = np.random.default_rng(5)
    bars = np.tile(np.arange(4), 12)
    npz = work / "bars.npz"
    np.savez(
        npz,
        x_train=make_images(bars, rng),
        y_train=(bars >= 2).astype(np.int64),
        x_test=make_images(bars[:16], rng),
        y_test=(bars[:16] >= 2).astype(np.int64),
        class_names=np.array(["horizontal", "vertical"]),
    )
    step(
        "fine-tune train",
        *("train", "--dataset", str(npz), "--init", str(source), "--epochs", "2"),
        *("--head-epochs", "1", "--seed", "3", "--validation-split", "0.25"),
        *("--learning-rate", "0.01", "--runs-dir", str(work / "runs"), "--name", "bars"),
    )
    state = json.loads((work / "runs" / "bars" / "run.json").read_text())
    return {
        "fine_tune_classes": state["class_names"],
        "fine_tune_from": Path(state["started_from"]["run"]).name,
        "fine_tune_epochs": state["epochs_run"],
    }


def _folder_flow(work: Path, step: Any) -> dict[str, object]:
    """Issue 27's path: a folder of colour pictures (mixed sizes, modes and formats, one file
    that is not a picture) through train, evaluate, predict, serve and export."""
    from fastapi.testclient import TestClient
    from signs import make_signs

    from cnnlab.serve import create_app

    folder = work / "signs"
    make_signs(folder, count=48, seed=1)
    (folder / "red_cross" / "notes.jpg").write_text("not a picture")
    run = work / "runs" / "signs"
    step(
        "folder train",
        *("train", "--dataset", str(folder), "--image-size", "24", "--epochs", "1"),
        *("--seed", "3", "--runs-dir", str(work / "runs"), "--name", "signs"),
    )
    state = json.loads((run / "run.json").read_text())
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    picture = next((folder / "green_circle").iterdir())
    step("folder evaluate", "evaluate", str(run), "--json")
    predicted = step("folder predict", "predict", str(run), str(picture), "--json")
    label = json.loads(predicted[: predicted.rindex("]") + 1])[0]["label"]
    with TestClient(create_app(run)) as client:
        answer = client.post("/api/predict", files={"file": (picture.name, picture.read_bytes())})
        model = client.get("/api/model").json()
    found: dict[str, object] = {
        "folder_recipe": state["input_recipe"],
        "folder_classes": state["class_names"] == classes == model["classes"],
        "folder_unreadable": [Path(p).name for p in state["unreadable_images"]],
        "folder_predicted_known": label in classes,
        "folder_serve": [answer.status_code, answer.json().get("label") == label],
    }
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "jax":
        code, _, _ = _cli("export", str(run), "--format", "onnx", "-o", str(work / "signs-onnx"))
        if code == 0:
            from cnnlab.prediction.inference import load_predictor

            onnx = load_predictor(work / "signs-onnx" / "model.onnx").predict([picture])[0]
            found["folder_onnx_same_label"] = onnx.label == label
        else:
            found["folder_onnx_same_label"] = f"export failed ({code})"
    return found


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2:])))
