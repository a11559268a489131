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
        *("--runs-dir", str(work / "runs"), "--name", "tiny"),
    )
    report["backend_line"] = next(line for line in log.splitlines() if "Keras backend" in line)
    report["config_backend"] = "backend" in (run / "config.toml").read_text()
    report["run_json_backend"] = json.loads((run / "run.json").read_text())["backend"]
    step("evaluate", "evaluate", str(run), "--json")
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
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2:])))
