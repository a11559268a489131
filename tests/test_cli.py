"""The command line, driven through `main()`: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import make_images

import cnnlab
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.data import sources, write_idx
from cnnlab.runs import Run


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("cnnlab: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_import_and_help_do_not_load_tensorflow() -> None:
    code = (
        "import sys, cnnlab, cnnlab.cli\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("data", "summary", "train", "evaluate", "predict"):
        assert command in result.stdout


def test_public_api_is_complete() -> None:
    assert set(cnnlab.__all__) == {"__version__", *cnnlab._EXPORTS}
    assert callable(cnnlab.train) and callable(cnnlab.predict)


def test_summary_prints_the_seed_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary")
    assert code == 0
    assert 'Model: "Basic_CNN_model"' in out and "Total params: 73,834" in out


def test_summary_of_a_bad_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "summary", "nonexistent_net")
    assert code == 2
    assert_one_line_error(err, "unknown architecture 'nonexistent_net'")


def test_data_info_reports_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (12, 28, 28), "u1"))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(12, dtype="u1") % 10)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 255, (5, 28, 28), "u1"))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5, dtype="u1"))
    code, out, err = run(capsys, "data", "info", "--data-dir", str(tmp_path), "--no-download")
    assert "--data-dir" in out and "mismatch" in out  # not the real files: digests differ
    assert "12" in out and "5" in out
    # Like `sha256sum -c`: every file listed, and a mismatch fails the command.
    assert code == 2
    assert out.count("mismatch") == 4 and err.count("cnnlab: error:") == 4
    assert "does not match the recorded" in err


def test_data_info_corrupt_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")  # truncated
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        write_idx(tmp_path / name, np.zeros(3, dtype="u1"))
    code, out, err = run(capsys, "data", "info", "--data-dir", str(tmp_path), "--no-download")
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("cnnlab: error:")]
    assert len(errors) == 4 and sum("truncated" in line for line in errors) == 2, err
    assert "Traceback" not in err
    assert out.count("FAILED") == 2 and "test_images" in out  # the others are still listed


def test_data_info_lists_every_file_when_one_is_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sources.DATASETS["fashion_mnist"]
    monkeypatch.setitem(sources.DATASETS, "fashion_mnist", replace(spec, system_dirs=()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), dtype="u1"))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype="u1"))
    code, out, err = run(capsys, "data", "info", "--data-dir", str(tmp_path), "--no-download")
    assert code == 2
    for role in ("train_images", "train_labels", "test_images", "test_labels"):
        assert role in out
    assert out.count("FAILED") == 2
    assert err.count("cnnlab: error:") == 4  # two missing, two mismatching (not the real files)
    assert "t10k-images-idx3-ubyte" in err and "not found" in err


def test_train_evaluate_predict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_npz: Path, tiny_arch: Path
) -> None:
    code, out, _ = run(
        capsys, "train", "--dataset", str(tiny_npz), "--model", str(tiny_arch),
        "--epochs", "3", "--seed", "1", "--learning-rate", "0.01",
        "--validation-split", "0.25", "--runs-dir", str(tmp_path), "--name", "cli",
    )  # fmt: skip
    assert code == 0, out
    run_dir = tmp_path / "cli"
    assert f"run: {run_dir}" in out and (run_dir / "model.keras").is_file()

    code, out, _ = run(capsys, "evaluate", str(run_dir))
    assert code == 0 and "test accuracy" in out and "confusion matrix" in out
    assert "calibration: ECE" in out
    code, out, _ = run(capsys, "evaluate", str(run_dir), "--json")
    metrics = json.loads(out)
    assert metrics["test_images"] == 80
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["ece_calibrated"] <= 1
    assert metrics["temperature"] > 0 and metrics["val_nll_calibrated"] <= metrics["val_nll"]

    image = tmp_path / "left.png"
    Image.fromarray(make_images(np.array([2]), np.random.default_rng(3))[0]).save(image)
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not a picture")
    code, out, err = run(capsys, "predict", str(run_dir), str(image), str(not_image), "-k", "2")
    assert code == 2  # one image failed...
    assert out.startswith(f"{image}: left ")  # ...and the other was still predicted
    assert "  found box [0, 0, 28, 28] (left, top, right, bottom" in out  # the whole 28x28
    assert_one_line_error(err, "notes.png")
    code, out, _ = run(capsys, "predict", str(run_dir), str(image), "--json")
    assert code == 0
    [result] = json.loads(out)
    assert result["label"] == "left" and len(result["top"]) == 3
    assert result["unsure"] in (True, False)  # evaluated: the run has an unsure threshold


def test_train_with_a_preset_and_flags_over_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_npz: Path
) -> None:
    code, out, _ = run(
        capsys, "train", "--preset", "improved", "--dataset", str(tiny_npz), "--epochs", "2",
        "--seed", "1", "--runs-dir", str(tmp_path), "--name", "preset",
    )  # fmt: skip
    assert code == 0, out
    config = load_config(tmp_path / "preset" / "config.toml")
    assert config.model.architecture == "improved"  # from the preset
    assert (config.train.lr_schedule, config.train.batch_size) == ("cosine", 128)
    assert config.train.epochs == 2  # the flag wins over the preset's 18
    history = Run(tmp_path / "preset").history()
    # The cosine schedule with one warm-up epoch: half the peak, then the peak.
    assert [row["learning_rate"] for row in history] == pytest.approx([0.0015, 0.003])


def test_train_with_an_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line usage error
        main(["train", "--preset", "resnet50"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'resnet50'" in err and "'fcn', 'improved', 'resnet'" in err


def test_train_with_a_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nepochs = -1\n")
    code, _, err = run(capsys, "train", "--config", str(config))
    assert code == 2
    assert_one_line_error(err, "train.epochs must be >= 1")


def test_train_with_a_missing_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "train", "--dataset", str(tmp_path / "nothing.npz"), "--runs-dir", str(tmp_path)
    )
    assert code == 2
    assert_one_line_error(err, "nothing.npz")
    assert not any(tmp_path.iterdir())  # no half-made run folder


@pytest.mark.parametrize("what", ["missing", "corrupt", "empty-dir"])
def test_predict_with_a_bad_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, what: str
) -> None:
    target = tmp_path / "run"
    if what == "corrupt":
        target.mkdir()
        (target / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    elif what == "empty-dir":
        target.mkdir()
    image = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(image)
    code, _, err = run(capsys, "predict", str(target), str(image))
    assert code == 2
    assert_one_line_error(err, "model")


def test_every_setting_has_a_train_flag() -> None:
    """Each field of the config (bar those a TOML file is for) can be set from the command line."""
    import argparse
    import dataclasses

    from cnnlab.cli import build_parser
    from cnnlab.config import Config

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    dests = {action.dest for action in train._actions}
    config = Config()
    settings = {
        f"{section.name}.{field.name}"
        for section in dataclasses.fields(config)
        for field in dataclasses.fields(getattr(config, section.name))
    }
    file_only = {"train.recipe", "train.reduce_lr_factor"}  # --recipe; the factor: a TOML file
    assert settings - file_only <= dests, sorted(settings - file_only - dests)
