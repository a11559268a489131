"""Prediction through a folder-trained run's input recipe (issue 27): new pictures are prepared
exactly as the training images were (`Recipe.load`), on every path: Python, the CLI, ONNX.

The run is `colour_run.write_colour_run`: a tiny RGB model whose weights make it answer the
picture's main colour, so any grey, negated or cropped input shows as a wrong label.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from colour_run import COLOUR_CLASSES, COLOUR_RECIPE, colour_model, colour_picture
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.folders import Recipe, scale
from cnnlab.errors import CnnlabError
from cnnlab.prediction.inference import KerasPredictor, load_predictor
from cnnlab.runs import Run

HAS_EXPORT = all(
    importlib.util.find_spec(name) is not None for name in ("tf2onnx", "onnx", "onnxruntime")
)


@pytest.fixture(scope="module")
def predictor(colour_run: Path) -> KerasPredictor:
    loaded = load_predictor(colour_run)
    assert isinstance(loaded, KerasPredictor)
    return loaded


def test_the_run_brings_its_recipe_and_classes(predictor: KerasPredictor) -> None:
    assert predictor.recipe == COLOUR_RECIPE
    assert predictor.class_names == list(COLOUR_CLASSES)
    assert predictor.input_info() == {
        "kind": "folder",
        "size": [16, 16],
        "color": "rgb",
        "resize": "squash",
    }


def test_a_file_is_prepared_exactly_as_training_decodes_it(
    predictor: KerasPredictor, colour_pictures: dict[Path, str]
) -> None:
    """Every kind of file (JPEG, PNG, RGBA, palette), given as a path, bytes or a file object,
    becomes `Recipe.load` of it scaled to [0, 1], bit for bit: one input, no box."""
    for path in colour_pictures:
        expected = scale(COLOUR_RECIPE.load(path))
        data = path.read_bytes()
        for source in (path, str(path), data, io.BytesIO(data)):
            (prepared,) = predictor.prepare([source])
            assert prepared.error is None, prepared.error
            assert prepared.inputs is not None and prepared.inputs.shape == (1, 16, 16, 3)
            np.testing.assert_array_equal(prepared.inputs[0], expected, err_msg=str(path))
            assert prepared.box is None


def test_labels_are_the_folder_classes(
    predictor: KerasPredictor, colour_pictures: dict[Path, str]
) -> None:
    results = predictor.predict(list(colour_pictures), top_k=3)
    assert [r.label for r in results] == list(colour_pictures.values())
    for result in results:
        assert {name for name, _ in result.top} == set(COLOUR_CLASSES)
        assert result.box is None and not result.blank


def test_pil_images_and_arrays(predictor: KerasPredictor, colour_pictures: dict[Path, str]) -> None:
    """A PIL image goes through the recipe as training's would; an array at the model's
    (16, 16, 3) is used as it is; any other array is made a picture first."""
    path = next(p for p in colour_pictures if p.suffix == ".jpg")
    with Image.open(path) as opened:
        (from_pil,) = predictor.prepare([opened])
    assert from_pil.inputs is not None
    np.testing.assert_array_equal(from_pil.inputs[0], scale(COLOUR_RECIPE.load(path)))

    ready = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    (as_is,) = predictor.prepare([ready])
    assert as_is.inputs is not None
    np.testing.assert_array_equal(as_is.inputs[0], ready.astype(np.float32) / 255)
    floats = ready.astype(np.float32) / 255
    (as_is_float,) = predictor.prepare([floats])
    assert as_is_float.inputs is not None
    np.testing.assert_array_equal(as_is_float.inputs[0], floats)

    other = np.asarray(colour_picture("green", (40, 30)))
    (converted,) = predictor.prepare([other])
    assert converted.inputs is not None
    expected = COLOUR_RECIPE.apply(Image.fromarray(other))
    np.testing.assert_array_equal(converted.inputs[0], expected)
    assert predictor.predict([other])[0].label == "green"

    (refused,) = predictor.prepare([np.full((16, 16, 3), 300, np.int32)])
    assert refused.error is not None and "0..255" in refused.error


def test_only_an_all_zero_input_is_blank(predictor: KerasPredictor) -> None:
    """A plain white photo is a picture like any other here (the garment recipe would find
    nothing in it); only an input that is all zeros says the model saw nothing."""
    white, black = Image.new("RGB", (30, 20), "white"), Image.new("RGB", (30, 20), "black")
    results = predictor.predict([white, black])
    assert [r.blank for r in results] == [False, True]


def test_a_bad_picture_fails_alone_named_by_its_source(
    predictor: KerasPredictor, colour_pictures: dict[Path, str], tmp_path: Path
) -> None:
    good = next(iter(colour_pictures))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.read_bytes()[:40])
    results = predictor.predict(
        [b"not an image", corrupt, good, tmp_path],
        sources=["upload.png", "corrupt.jpg", "good.png", "folder"],
    )
    assert results[0].error is not None and results[0].error.startswith("upload.png: ")
    assert results[1].error is not None and results[1].error.startswith("corrupt.jpg: ")
    assert results[2].error is None and results[2].label == colour_pictures[good]
    assert results[3].error is not None and "directory" in results[3].error


def test_a_file_over_the_byte_limit_is_refused_before_decoding(
    predictor: KerasPredictor,
    colour_pictures: dict[Path, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cnnlab.prediction.predictor

    path = next(iter(colour_pictures))
    monkeypatch.setattr(cnnlab.prediction.predictor, "MAX_FILE_BYTES", path.stat().st_size - 1)
    (result,) = predictor.predict([path])
    assert result.error is not None and "byte limit" in result.error
    assert result.error.startswith(f"{path}: ")


def test_keep_size_is_refused_for_a_fixed_size_model(
    predictor: KerasPredictor, colour_pictures: dict[Path, str]
) -> None:
    with pytest.raises(CnnlabError, match=r"16x16 images only.*leave that option out"):
        predictor.predict(list(colour_pictures), keep_size=True)


def test_keep_size_with_a_recipe_keeps_the_colour_picture_whole() -> None:
    """A model that takes any size sees the whole picture, upright, in the recipe's colour."""
    from cnnlab._backend import keras as _keras

    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(2, 3, padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    predictor = KerasPredictor(model, COLOUR_CLASSES, recipe=COLOUR_RECIPE)
    picture = colour_picture("blue", (45, 33))
    (whole,) = predictor.prepare([picture], keep_size=True)
    assert whole.inputs is not None and whole.inputs.shape == (1, 33, 45, 3)
    np.testing.assert_array_equal(whole.inputs[0], np.asarray(picture, np.float32) / 255)
    (fitted,) = predictor.prepare([picture])
    assert fitted.inputs is not None and fitted.inputs.shape == (1, 16, 16, 3)


def test_a_recipe_that_does_not_fit_the_model_is_refused() -> None:
    with pytest.raises(CnnlabError, match=r"input recipe \(28x28 rgb, squash\).*16x16x3"):
        KerasPredictor(colour_model(), COLOUR_CLASSES, recipe=Recipe((28, 28), "rgb", "squash"))
    with pytest.raises(CnnlabError, match="grayscale"):
        KerasPredictor(colour_model(), COLOUR_CLASSES, recipe=Recipe((16, 16), "grayscale"))


def test_cli_predict_json_shows_the_folder_classes(
    capsys: pytest.CaptureFixture[str], colour_run: Path, colour_pictures: dict[Path, str]
) -> None:
    paths = list(colour_pictures)[:4]
    code = main(["predict", str(colour_run), *map(str, paths), "--json", "-k", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    answers = json.loads(out)
    assert [a["label"] for a in answers] == [colour_pictures[p] for p in paths]
    assert all(a["box"] is None for a in answers)
    assert {t["class"] for a in answers for t in a["top"]} <= set(COLOUR_CLASSES)


@pytest.mark.skipif(not HAS_EXPORT, reason="needs cnnlab[export] (tf2onnx, onnx, onnxruntime)")
def test_onnx_reads_the_recipe_and_gives_the_keras_labels(
    colour_run: Path,
    colour_pictures: dict[Path, str],
    predictor: KerasPredictor,
    tmp_path: Path,
) -> None:
    """The export's sidecar and the ONNX metadata hold the recipe and class names; the ONNX
    predictor, from a folder with no run.json, prepares the same inputs as Keras."""
    import onnx

    from cnnlab.export import export
    from cnnlab.prediction.lite import OnnxPredictor

    written = export(colour_run, ["onnx"], out_dir=tmp_path)["onnx"]
    sidecar = json.loads(written.with_name(written.name + ".json").read_text())
    assert sidecar["input_recipe"] == COLOUR_RECIPE.to_dict()
    assert sidecar["class_names"] == list(COLOUR_CLASSES)
    assert "16x16 (squash)" in sidecar["preprocessing"]
    props = {p.key: p.value for p in onnx.load(str(written)).metadata_props}
    assert json.loads(props["class_names"]) == list(COLOUR_CLASSES)
    assert json.loads(props["input_recipe"]) == COLOUR_RECIPE.to_dict()

    lite = OnnxPredictor.load(written)
    assert lite.recipe == COLOUR_RECIPE and lite.class_names == list(COLOUR_CLASSES)
    assert Run.open(written).input_recipe() == COLOUR_RECIPE
    paths = list(colour_pictures)
    onnx_results, keras_results = lite.predict(paths), predictor.predict(paths)
    assert [r.label for r in onnx_results] == [r.label for r in keras_results]
    assert [r.label for r in onnx_results] == list(colour_pictures.values())
    for ours, theirs in zip(onnx_results, keras_results, strict=True):
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, atol=1e-5)
    for ours, theirs in zip(lite.prepare(paths), predictor.prepare(paths), strict=True):
        assert ours.inputs is not None and theirs.inputs is not None
        np.testing.assert_array_equal(ours.inputs, theirs.inputs)


@pytest.mark.skipif(not HAS_EXPORT, reason="needs cnnlab[export] (tf2onnx, onnx, onnxruntime)")
def test_onnx_from_a_run_folder_and_served(
    colour_run: Path, colour_pictures: dict[Path, str], tmp_path: Path
) -> None:
    """A model.onnx whose sidecar predates the recipe gets its run's (run.json beside it); the
    server over it reports the recipe and answers with the folder's classes."""
    import shutil
    import warnings

    from cnnlab.export import export
    from cnnlab.serve import create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2")
        from fastapi.testclient import TestClient

    run = Path(shutil.copytree(colour_run, tmp_path / "run"))
    written = export(run, ["onnx"])["onnx"]
    sidecar = written.with_name(written.name + ".json")
    info = json.loads(sidecar.read_text())
    del info["input_recipe"]
    sidecar.write_text(json.dumps(info))
    predictor = load_predictor(run, onnx=True)
    assert predictor.backend == "onnxruntime" and predictor.recipe == COLOUR_RECIPE

    client = TestClient(create_app(written))
    model = client.get("/api/model").json()
    assert model["backend"] == "onnxruntime" and model["input"]["kind"] == "folder"
    path, colour = next(iter(colour_pictures.items()))
    answer = client.post("/api/predict", files={"file": (path.name, path.read_bytes())}).json()
    assert answer["label"] == colour and answer["box"] is None


def test_damaged_files_give_one_error_each_never_a_crash(
    predictor: KerasPredictor, colour_pictures: dict[Path, str]
) -> None:
    """Every file kind cut short or with flipped bytes: each picture is predicted or has its
    own one-line error naming it; nothing escapes `predict`."""
    rng = np.random.default_rng(5)
    damaged, names = [], []
    for number, path in enumerate(colour_pictures):
        data = bytearray(path.read_bytes())
        for cut in (8, len(data) // 3, len(data) - 3):
            damaged.append(bytes(data[:cut]))
            names.append(f"cut-{number}-{cut}")
        flipped = data.copy()
        for index in rng.integers(0, len(data), 6):
            flipped[index] ^= 0xFF
        damaged.append(bytes(flipped))
        names.append(f"flipped-{number}")
    results = predictor.predict(damaged, sources=names)
    assert len(results) == len(damaged)
    for name, result in zip(names, results, strict=True):
        if result.error is None:
            assert result.label in COLOUR_CLASSES
        else:
            assert result.error.startswith(f"{name}: ") and "\n" not in result.error
    assert any(r.error for r in results)


def test_a_run_whose_recipe_does_not_fit_its_model_says_which_file(
    colour_run: Path, tmp_path: Path
) -> None:
    import shutil

    from cnnlab.errors import RunError

    run = Run(shutil.copytree(colour_run, tmp_path / "run"))
    state = run.state()
    state.input_recipe = Recipe((32, 32), "rgb", "crop").to_dict()
    run.write_state(state)
    with pytest.raises(RunError, match=r"run\.json: the input recipe \(32x32 rgb, crop\)"):
        load_predictor(run.dir)
