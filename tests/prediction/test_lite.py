"""Tests for cnnlab.prediction.lite: an exported `model.onnx` on ONNX Runtime as a Predictor.

The first tests use a tiny ONNX graph written here with `onnx.helper` (flatten, one matrix,
softmax), so the predictor's own rules (class names from the sidecar, clear errors) are checked
without training or exporting; the last ones use the tiny trained run exported by
`cnnlab.export` and compare with the Keras path.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import CLASS_NAMES, make_images

from cnnlab.errors import RunError
from cnnlab.runs import sidecar_path

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None
HAS_TF2ONNX = importlib.util.find_spec("tf2onnx") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="needs cnnlab[lite] (onnxruntime)")
needs_graph = pytest.mark.skipif(
    not (HAS_ORT and HAS_ONNX), reason="needs onnx and onnxruntime to write a tiny graph"
)
needs_export = pytest.mark.skipif(
    not (HAS_ORT and HAS_TF2ONNX), reason="needs cnnlab[export] (tf2onnx, onnxruntime)"
)

N_CLASSES = 4


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny run exported as ONNX outside the shared run folder."""
    if not (HAS_ORT and HAS_TF2ONNX):
        pytest.skip("needs cnnlab[export] (tf2onnx, onnxruntime)")
    from cnnlab.export import export

    return export(tiny_run, ["onnx"], out_dir=tmp_path_factory.mktemp("exported"))


# --- A hand-written graph: the predictor's own rules -------------------------------------------

WEIGHTS = np.random.default_rng(5).normal(size=(28 * 28, N_CLASSES)).astype(np.float32)


def _write_graph(path: Path) -> Path:
    """(N, 28, 28, 1) -> flatten -> @ WEIGHTS -> softmax: (N, 4), as an .onnx file."""
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", N_CLASSES])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 28 * 28], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(WEIGHTS, "weights"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any onnxruntime cnnlab[lite] allows
    save(model, str(path))
    return path


def _expected(x: np.ndarray) -> np.ndarray:
    logits = x.reshape(len(x), -1).astype(np.float64) @ WEIGHTS.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@needs_graph
def test_class_names_name_and_size_come_from_the_sidecar(tmp_path: Path) -> None:
    from cnnlab.prediction.lite import OnnxPredictor

    path = _write_graph(tmp_path / "model.onnx")
    names = ["shirt", "shoe", "bag", "hat"]
    sidecar_path(path).write_text(
        json.dumps({"class_names": names, "model_name": "tiny_cnn", "parameters": 3136})
    )
    predictor = OnnxPredictor.load(path)
    assert predictor.backend == "onnxruntime"
    assert predictor.class_names == names
    assert predictor.name == "tiny_cnn" and predictor.parameters == 3136
    assert predictor.size == (28, 28) and predictor.channels == 1
    assert not predictor.any_input_size
    x = np.random.default_rng(0).random((5, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(predictor.probabilities(x), _expected(x), atol=1e-5)


@needs_graph
@pytest.mark.parametrize(
    "sidecar",
    [None, "{not json", json.dumps({"class_names": "shirt,shoe", "parameters": "many"})],
    ids=["none", "corrupt", "wrong-types"],
)
def test_without_usable_sidecar_names_the_classes_are_numbered(
    tmp_path: Path, sidecar: str | None
) -> None:
    from cnnlab.prediction.lite import OnnxPredictor

    path = _write_graph(tmp_path / "fashion.onnx")
    if sidecar is not None:
        sidecar_path(path).write_text(sidecar)
    predictor = OnnxPredictor.load(path)
    assert predictor.class_names == ["0", "1", "2", "3"]
    assert predictor.name == "fashion" and predictor.parameters is None  # the file's stem
    x = np.zeros((1, 28, 28, 1), np.float32)
    x[0, 3, 4, 0] = 1.0
    (result,) = predictor.predict([x[0]], top_k=2)
    assert result.error is None
    assert result.label == str(int(np.argmax(_expected(x)[0])))


@needs_graph
def test_a_sidecar_with_the_wrong_number_of_names_is_a_run_error(tmp_path: Path) -> None:
    from cnnlab.prediction.lite import OnnxPredictor

    path = _write_graph(tmp_path / "model.onnx")
    sidecar_path(path).write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    with pytest.raises(RunError, match="ONNX model: the model has 4 outputs but 3 class names"):
        OnnxPredictor.load(path)


@needs_ort
def test_a_missing_or_broken_file_is_one_clear_run_error(tmp_path: Path) -> None:
    from cnnlab.prediction.lite import OnnxPredictor

    with pytest.raises(RunError, match=r"no ONNX model found; write one with `cnnlab export"):
        OnnxPredictor.load(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    with pytest.raises(RunError) as caught:
        OnnxPredictor.load(broken)
    assert str(caught.value).startswith(f"{broken}: not a usable ONNX model (")
    assert "\n" not in str(caught.value)


def test_without_onnxruntime_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.prediction.lite import OnnxPredictor

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(RunError, match=r"needs onnxruntime.*pip install 'cnnlab\[lite\]'"):
        OnnxPredictor.load(tmp_path / "model.onnx")


# --- The tiny trained run, exported: the same answers as Keras, without TensorFlow -----------


@needs_export
def test_onnx_predictor_matches_the_keras_predictor(
    tiny_run: Path, exported: dict[str, Path], tmp_path: Path
) -> None:
    from cnnlab.prediction.inference import load_predictor

    images = make_images(np.arange(4), np.random.default_rng(3))
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    light = load_predictor(exported["onnx"])
    assert light.backend == "onnxruntime" and light.class_names == list(CLASS_NAMES)
    assert light.size == (28, 28)
    keras_results = load_predictor(tiny_run).predict(files)
    light_results = light.predict([*files, tmp_path / "missing.png"])
    assert [r.label for r in light_results[:4]] == [r.label for r in keras_results]
    assert light_results[4].error is not None


LIGHT_SCRIPT = """
import json, sys
from cnnlab.cli import main
from cnnlab.serve import create_app
from fastapi.testclient import TestClient

onnx_file, image = sys.argv[1], sys.argv[2]
assert main(["predict", onnx_file, image, "--json"]) == 0
client = TestClient(create_app(onnx_file))
with open(image, "rb") as handle:
    answer = client.post("/api/predict", files={"file": ("x.png", handle, "image/png")})
assert answer.status_code == 200, answer.text
model = client.get("/api/model").json()
assert model["backend"] == "onnxruntime" and model["features"] is False, model
with open(image, "rb") as handle:
    features = client.post("/api/features", files={"file": ("x.png", handle, "image/png")})
assert features.status_code == 501 and "ONNX" in features.json()["detail"], features.text
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("LABEL", answer.json()["label"], "HEAVY", heavy)
"""


@needs_export
def test_the_onnx_path_never_imports_tensorflow(exported: dict[str, Path], tmp_path: Path) -> None:
    image = tmp_path / "bottom.png"
    Image.fromarray(make_images(np.array([1]), np.random.default_rng(2))[0]).save(image)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LIGHT_SCRIPT), str(exported["onnx"]), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"label": "bottom"' in done.stdout
    assert "LABEL bottom HEAVY []" in done.stdout
