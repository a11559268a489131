"""The backend matrix: train, evaluate, predict, visualize, export and serve on each Keras backend,
and exact resume after kills on jax and torch (TensorFlow's is
tests/training/test_fault_injection.py).

Keras reads KERAS_BACKEND once, at its first import, so each backend runs `backend_flow.py` (and
`resume_flow.py`) in its own process; the processes of one fixture start together and each test
waits for its own. A backend that is not installed is skipped (`pip install -e '.[backends]'`
brings jax and torch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ("tensorflow", "jax", "torch")
RESUME_BACKENDS = ("jax", "torch")
HERE = Path(__file__).parent
PICTURES = ("history", "features", "gradcam")

pytestmark = pytest.mark.backends


def _started(
    script: str, backends: tuple[str, ...], tmp: pytest.TempPathFactory, *args: str
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """`script` started once per installed backend, each with its own work folder, for a
    fixture to yield; the processes still running when it is torn down are killed."""
    running = {}
    for backend in backends:
        if importlib.util.find_spec(backend) is None:
            continue
        work = tmp.mktemp(f"{Path(script).stem}-{backend}")
        env = {
            **os.environ,
            "KERAS_BACKEND": backend,
            "PYTHONPATH": os.pathsep.join(
                [str(HERE), str(HERE.parent / "benchmarks"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        running[backend] = subprocess.Popen(
            [sys.executable, str(HERE / script), str(work), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    yield running
    for process in running.values():
        if process.poll() is None:
            process.kill()


def _report(running: dict[str, subprocess.Popen[str]], backend: str) -> dict[str, Any]:
    """The JSON line the backend's process printed last, once it has ended well."""
    if backend not in running:
        pytest.skip(f"{backend} is not installed (pip install -e '.[backends]')")
    out, err = running[backend].communicate(timeout=600)
    assert running[backend].returncode == 0, err[-3000:]
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    yield from _started("backend_flow.py", BACKENDS, tmp_path_factory, *PICTURES)


@pytest.fixture(scope="module")
def resumes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    yield from _started("resume_flow.py", RESUME_BACKENDS, tmp_path_factory)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_command_on_the_backend(
    flows: dict[str, subprocess.Popen[str]], backend: str
) -> None:
    report = _report(flows, backend)
    assert report["backend_line"].startswith(f"Keras backend: {backend}; precision: ")
    assert report["config_backend"] and report["run_json_backend"] == backend
    assert report["predicted"] == "bottom"  # the tiny classes are learned in one epoch
    assert all(report[f"visualize {kind}"] == 0 for kind in PICTURES)
    assert report["serve"] == [200, "bottom"]
    # TensorBoard (Keras' callback writes through tf.summary on every backend): the curves are
    # history.csv's, one histogram point per weight and epoch, the test run after evaluate.
    assert report["tensorboard_mismatches"] == []
    assert report["tensorboard_histogram_steps"] == ["[0]"]  # the one epoch trained
    assert report["tensorboard_test"] == [
        "confusion_matrix",
        "epoch_accuracy",
        "epoch_loss",
        "highest_loss",
        "report",
    ]
    if backend == "torch":  # Keras exports ONNX through torch.onnx, and it predicts the same
        assert report["export_onnx"] == [0, []]
        assert report["export_onnx_predicted"] == "bottom"
    elif backend == "jax":  # no ONNX from Keras on jax here: one line that says what to do
        code, errors = report["export_onnx"]
        assert code == 2 and len(errors) == 1 and "KERAS_BACKEND=tensorflow" in errors[0]
    # A folder of colour pictures: streamed, its recipe recorded, its classes everywhere.
    assert report["folder train"] == report["folder evaluate"] == report["folder predict"] == 0
    assert report["folder_recipe"] == {"size": [24, 24], "color": "rgb", "resize": "squash"}
    assert report["folder_classes"] and report["folder_predicted_known"]
    assert report["folder_unreadable"] == ["notes.jpg"]
    assert report["folder_serve"] == [200, True]
    if backend != "jax":
        assert report["folder_onnx_same_label"] is True
    # The explainer's float64 sums equal each layer's own float32 output (issue 29).
    errors = report["explainer_relative_errors"]
    assert len(errors) == 4 and max(errors.values()) <= 1e-5, errors
    assert report["explainer_serve"] == [200, True]
    # Fine-tuning: a 2-class head on the 4-class run, two phases.
    assert report["fine-tune train"] == 0 and report["fine_tune_epochs"] == 2
    assert report["fine_tune_classes"] == ["horizontal", "vertical"]
    assert report["fine_tune_from"] == "tiny"


@pytest.mark.parametrize("backend", RESUME_BACKENDS)
def test_a_killed_run_resumes_exactly_on_the_backend(
    resumes: dict[str, subprocess.Popen[str]], backend: str
) -> None:
    """Killed mid-epoch, mid-save and mid-epoch again, then run to the end: every metric of
    every epoch, the best epoch and the final weights equal an uninterrupted run's, bit for
    bit (the optimizer's state, the RNG and the data order all came back)."""
    report = _report(resumes, backend)
    assert report["backend"] == backend
    assert report["kill_codes"].count(-9) >= 2, report  # it really was interrupted
    assert report["finished"] and report["epochs"] == 4
    assert report["same_history"] and report["same_best_epoch"] and report["same_weights"]
