"""`cnnlab export`: the files and their metadata, parity with Keras, and an install without
TensorFlow. The ONNX Runtime predictor that reads the export is tested in
tests/prediction/test_lite.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic import CLASS_NAMES, make_images

from cnnlab import export as export_module
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.export import export, float32_model, parse_formats

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_TF2ONNX = importlib.util.find_spec("tf2onnx") is not None
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
needs_onnx = pytest.mark.skipif(
    not (HAS_ORT and HAS_TF2ONNX), reason="needs cnnlab[export] (tf2onnx, onnxruntime)"
)
# Exported probabilities against the float32 model they were exported from. Two libraries'
# float32 kernels (oneDNN in TensorFlow, MLAS in ONNX Runtime, each with AVX2 or AVX-512 code
# chosen per CPU) sum the convolutions' up to 576 products in different orders: logits move by
# ~1e-6 relative, probabilities by less than 1e-5; 1e-4 leaves room for a Winograd-class
# algorithm and still catches a broken export (wrong layout or scaling moves them by ~0.1).
EXPORT_ATOL = 1e-4
# ... and against the trained model, which may compute in bfloat16 (8-bit mantissa).
PRECISION_ATOL = 0.05


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny run exported as ONNX (and LiteRT) outside the shared run folder."""
    if not (HAS_ORT and HAS_TF2ONNX):
        pytest.skip("needs cnnlab[export] (tf2onnx, onnxruntime)")
    out = tmp_path_factory.mktemp("exported")
    return export(tiny_run, ["onnx", "litert"], out_dir=out)


def _test_images(n: int = 40) -> np.ndarray:
    labels = np.tile(np.arange(len(CLASS_NAMES)), n // len(CLASS_NAMES))
    images = make_images(labels, np.random.default_rng(11))
    return (images.astype(np.float32) / 255)[..., None]


def test_parse_formats_accepts_repeats_commas_and_aliases() -> None:
    assert parse_formats(["onnx,tflite", "onnx", "saved_model"]) == [
        "onnx",
        "litert",
        "saved_model",
    ]
    with pytest.raises(CnnlabError, match="unknown export format 'pt'"):
        parse_formats(["pt"])


def test_a_missing_exporter_names_the_extra(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        export_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tf2onnx" else real(name, *a),
    )
    with pytest.raises(CnnlabError, match=r"cnnlab\[export\]"):
        export(tiny_run, ["onnx"], out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@needs_onnx
def test_onnx_export_writes_metadata_and_matches_keras(
    tiny_run: Path, exported: dict[str, Path]
) -> None:
    import onnx
    import onnxruntime as ort

    from cnnlab.runs import load_model

    path = exported["onnx"]
    assert path.name == "model.onnx" and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    info = json.loads((path.parent / "model.onnx.json").read_text())
    assert info["class_names"] == list(CLASS_NAMES)
    assert info["input_shape"] == [28, 28, 1] and info["input_range"] == [0.0, 1.0]
    assert "cnnlab.prediction.preprocess" in info["preprocessing"]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["class_names"]) == list(CLASS_NAMES)

    model = load_model(tiny_run)
    x = _test_images()
    keras_probs = np.asarray(model.predict_on_batch(x))
    float32_probs = np.asarray(float32_model(model).predict_on_batch(x))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(onnx_probs, float32_probs, atol=EXPORT_ATOL)
    np.testing.assert_allclose(onnx_probs, keras_probs, atol=PRECISION_ATOL)
    assert (onnx_probs.argmax(1) == keras_probs.argmax(1)).all()


@needs_onnx
def test_onnx_gives_the_logits_and_the_same_unsure_answers(
    evaluated_run: Path, exported: dict[str, Path]
) -> None:
    """The ONNX file's second output is the logits (the unsure rule's energy needs them): they
    match the float32 Keras model's, and ONNX Runtime marks the same answers unsure as Keras."""
    import onnxruntime as ort

    from cnnlab.model.heads import with_logits
    from cnnlab.prediction.inference import load_predictor
    from cnnlab.prediction.lite import OnnxPredictor
    from cnnlab.runs import load_model

    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    assert [output.shape[-1] for output in session.get_outputs()] == [len(CLASS_NAMES)] * 2
    x = _test_images()
    onnx_probs, onnx_logits = session.run(None, {session.get_inputs()[0].name: x})
    both = with_logits(float32_model(load_model(evaluated_run)))
    assert both is not None
    _, keras_logits = both.predict_on_batch(x)
    np.testing.assert_allclose(onnx_logits, keras_logits, rtol=1e-4, atol=1e-3)
    shifted = np.exp(onnx_logits - onnx_logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(shifted / shifted.sum(axis=1, keepdims=True), onnx_probs, atol=1e-5)

    keras_predictor = load_predictor(evaluated_run)
    onnx_predictor = OnnxPredictor.load(exported["onnx"])
    assert onnx_predictor.gives_logits
    onnx_predictor.unsure_rule = keras_predictor.unsure_rule
    rule = keras_predictor.unsure_rule
    assert rule is not None and rule.energy_threshold is not None
    # A threshold at the median energy of these pictures: about half are unsure, and both
    # runtimes agree on which, but for a picture whose energy lies within 0.5 of it (the
    # Keras model may compute in bfloat16, logits off by up to ~1%; ONNX in float32).
    from cnnlab.calibration import UnsureRule, energy

    energies = energy(keras_logits, rule.temperature)
    middle = float(np.median(energies))
    tested = UnsureRule(rule.temperature, rule.threshold, middle)
    keras_predictor.unsure_rule = onnx_predictor.unsure_rule = tested
    keras_flags = [r.unsure for r in keras_predictor.predict(list(x))]
    onnx_flags = [r.unsure for r in onnx_predictor.predict(list(x))]
    assert 10 <= sum(onnx_flags) <= len(x) - 10
    differ = [i for i, (k, o) in enumerate(zip(keras_flags, onnx_flags, strict=True)) if k != o]
    assert all(abs(energies[i] - middle) < 0.5 for i in differ), differ
    assert len(differ) <= len(x) // 4


@needs_onnx
@pytest.mark.skipif(not HAS_LITERT, reason="needs ai-edge-litert")
def test_litert_export_matches_keras(tiny_run: Path, exported: dict[str, Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from cnnlab.runs import load_model

    path = exported["litert"]
    assert path.suffix == ".tflite" and (path.parent / "model.tflite.json").is_file()
    model = load_model(tiny_run)
    x = _test_images()
    keras_probs = np.asarray(model.predict_on_batch(x))
    interpreter = Interpreter(model_path=str(path))
    (entry,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(entry["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], x)
    interpreter.invoke()
    lite_probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(lite_probs, keras_probs, atol=PRECISION_ATOL)
    assert (lite_probs.argmax(1) == keras_probs.argmax(1)).all()


@needs_onnx
def test_cli_export_writes_into_the_given_folder(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tiny_run), "--format", "saved_model", "-o", str(tmp_path)]) == 0
    assert "wrote saved_model" in capsys.readouterr().out
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    assert (tmp_path / "saved_model.json").is_file()
    assert main(["export", str(tiny_run), "--format", "nope"]) == 2


def test_the_base_install_does_not_require_tensorflow() -> None:
    """`pip install cnnlab[lite]` must not pull TensorFlow or Keras: they live in extras."""
    from importlib.metadata import requires

    requirements = requires("cnnlab") or []
    base = [r for r in requirements if "extra ==" not in r]
    heavy = ("tensorflow", "keras", "tf2onnx")
    assert base and not [r for r in base if r.lower().startswith(heavy)]
    lite = [r for r in requirements if 'extra == "lite"' in r]
    assert lite and all(r.startswith("onnxruntime") for r in lite)


def test_a_missing_keras_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab import _backend

    monkeypatch.setitem(sys.modules, "keras", None)  # as if Keras were not installed
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[train\]'"):
        _backend.keras()
    assert main(["summary"]) == 2
    err = capsys.readouterr().err
    assert err.count("cnnlab: error:") == 1 and "cnnlab[train]" in err


@pytest.mark.skipif(importlib.util.find_spec("tf2onnx") is None, reason="needs cnnlab[export]")
def test_a_float32_run_exports_exactly(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Any
) -> None:
    """A model loaded from a .keras file has never been called; export must still work."""
    import onnxruntime

    from cnnlab.runs import load_model
    from cnnlab.training.trainer import train

    run = train(tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=1, precision="float32")).run_dir
    path = export(run, ["onnx"])["onnx"]
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    expected = np.asarray(load_model(run).predict_on_batch(x))
    session = onnxruntime.InferenceSession(str(path))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, atol=EXPORT_ATOL)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


@needs_onnx
def test_a_fully_convolutional_model_exports_with_open_sizes(tmp_path: Path) -> None:
    """The fcn preset's model (RandomCanvas inside: identity at inference) exports to ONNX with
    height and width open, and reads a larger picture as the Keras model does."""
    import keras

    from cnnlab.model.builder import build_model
    from cnnlab.prediction.lite import OnnxPredictor

    keras.utils.set_random_seed(4)
    model = build_model("fcn", (28, 28, 1), len(CLASS_NAMES))
    model.save(tmp_path / "model.keras")
    path = export(tmp_path / "model.keras", ["onnx"])["onnx"]
    predictor = OnnxPredictor.load(path)
    assert predictor.any_input_size
    x = np.random.default_rng(2).random((3, 56, 84, 1)).astype(np.float32)
    np.testing.assert_allclose(
        predictor.probabilities(x), model.predict_on_batch(x), atol=EXPORT_ATOL
    )


@needs_onnx
def test_keras_augmentation_layers_are_left_out_of_the_export(tmp_path: Path) -> None:
    """Keras' own RandomZoom/RandomContrast... pass a picture through at inference but leave
    random and image-transform operations in the traced graph, which ONNX Runtime refuses to
    load; the export leaves them out (the photos recipe's model has five)."""
    import keras
    import onnxruntime

    from cnnlab.export import inference_model
    from cnnlab.runs import Run, RunState

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.RandomZoom(0.1),
            keras.layers.RandomContrast(0.2, value_range=(0, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    stripped = inference_model(model)
    assert [type(layer).__name__ for layer in stripped.layers] == [
        "Conv2D",
        "GlobalAveragePooling2D",
        "Dense",
    ]
    run = Run(tmp_path / "run")
    run.make_dir()
    run.write_state(RunState(status="finished", class_names=["a", "b", "c"]))
    model.save(run.model_file)
    path = export(run.dir, ["onnx"])["onnx"]
    session = onnxruntime.InferenceSession(str(path))  # raised INVALID_GRAPH before
    x = np.random.default_rng(0).random((5, 16, 16, 3)).astype("float32")
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, np.asarray(model.predict_on_batch(x)), atol=EXPORT_ATOL)
