"""Model files that hold code: refused by default in cnnlab's words, loaded with --unsafe."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab._backend import keras as _keras
from cnnlab.cli import build_parser, main
from cnnlab.errors import UnsafeModelError
from cnnlab.runs import load_model

LOADING_COMMANDS = ["summary", "evaluate", "predict", "visualize", "serve", "export", "bench"]


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real .keras file with a Lambda layer whose code touches a marker file when it runs."""
    keras = _keras()
    folder = tmp_path_factory.mktemp("lambda")
    marker = folder / "code-ran"
    code = f"lambda x: __import__('pathlib').Path({str(marker)!r}).touch() or x * 2.0"
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Lambda(eval(code)),  # the code a stranger's file could hold
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    path = folder / "lambda.keras"
    model.save(path)
    marker.unlink(missing_ok=True)  # building the model above ran it once
    return path, marker


def test_a_file_with_code_is_refused_in_cnnlabs_words(lambda_model: tuple[Path, Path]) -> None:
    path, marker = lambda_model
    with pytest.raises(UnsafeModelError) as caught:
        load_model(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert "would run that code" in message and "--unsafe" in message
    assert "safe_mode" in message  # Keras' own message is kept
    assert not marker.exists()  # nothing in the file ran


def test_unsafe_loads_a_trusted_file(lambda_model: tuple[Path, Path]) -> None:
    path, marker = lambda_model
    model = load_model(path, unsafe=True)
    assert model.output_shape == (None, 3)
    assert marker.exists()  # the file's code did run: that is what --unsafe allows
    marker.unlink()


def test_cli_refuses_then_loads_with_unsafe(
    lambda_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = lambda_model
    image = tmp_path / "shirt.png"
    Image.fromarray(np.pad(np.full((10, 10), 255, np.uint8), 9)).save(image)
    for argv in (["summary", str(path)], ["predict", str(path), str(image)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cnnlab: error:"), err
        assert "--unsafe" in err[0] and "run that code" in err[0]
        assert not marker.exists()
        assert main([*argv, "--unsafe"]) == 0, capsys.readouterr().err
        marker.unlink()  # the trusted file's code ran


def test_every_command_that_loads_a_model_takes_unsafe() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in LOADING_COMMANDS:
        options = {o for action in commands.choices[name]._actions for o in action.option_strings}
        assert "--unsafe" in options, name


def test_bench_times_a_run_with_code_only_with_unsafe(
    lambda_model: tuple[Path, Path], tmp_path: Path
) -> None:
    # `cnnlab bench --run RUN [--unsafe]`: the worker that times RUN's model loads it.
    from cnnlab.bench import _worker

    path, marker = lambda_model
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(path, run / "model.keras")
    args = {"run_dir": str(run), "batch_size": 4, "calls": 2, "repeats": 1, "data_dir": None}
    with pytest.raises(UnsafeModelError, match="--unsafe"):
        _worker.inference(args)
    assert not marker.exists()

    result = _worker.inference({**args, "unsafe": True})
    assert marker.exists()  # the file's code ran: what --unsafe allows
    assert [row["format"] for row in result["rows"]][:2] == ["keras", "keras"]
    marker.unlink()
