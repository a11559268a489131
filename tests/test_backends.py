"""The backend matrix: train, evaluate, predict, visualize, export and serve on each Keras backend.

Keras reads KERAS_BACKEND once, at its first import, so each backend runs `backend_flow.py` in
its own process; the three start together (one fixture) and each test waits for its own.
A backend that is not installed is skipped (`pip install -e '.[backends]'` brings jax and torch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BACKENDS = ("tensorflow", "jax", "torch")
HERE = Path(__file__).parent
PICTURES = ("history", "features", "gradcam")

pytestmark = pytest.mark.backends


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.Popen[str]]:
    running = {}
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is None:
            continue
        work = tmp_path_factory.mktemp(f"backend-{backend}")
        env = {
            **os.environ,
            "KERAS_BACKEND": backend,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        running[backend] = subprocess.Popen(
            [sys.executable, str(HERE / "backend_flow.py"), str(work), *PICTURES],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    yield running
    for process in running.values():
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_command_on_the_backend(
    flows: dict[str, subprocess.Popen[str]], backend: str
) -> None:
    if backend not in flows:
        pytest.skip(f"{backend} is not installed (pip install -e '.[backends]')")
    out, err = flows[backend].communicate(timeout=600)
    assert flows[backend].returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["backend_line"].startswith(f"Keras backend: {backend}; precision: ")
    assert report["config_backend"] and report["run_json_backend"] == backend
    assert report["predicted"] == "bottom"  # the tiny classes are learned in one epoch
    assert all(report[f"visualize {kind}"] == 0 for kind in PICTURES)
    assert report["serve"] == [200, "bottom"]
    if backend == "torch":  # Keras exports ONNX through torch.onnx, and it predicts the same
        assert report["export_onnx"] == [0, []]
        assert report["export_onnx_predicted"] == "bottom"
    elif backend == "jax":  # no ONNX from Keras on jax here: one line that says what to do
        code, errors = report["export_onnx"]
        assert code == 2 and len(errors) == 1 and "KERAS_BACKEND=tensorflow" in errors[0]
