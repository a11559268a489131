"""`cnnlab runs`, `cnnlab compare`, the latest finished run when none is named, and
`cnnlab train --print-config`, driven through `main()`: output, exit codes, one-line errors.

The runs are copies of the shared tiny run (run.json or config.toml edited); only the
`--print-config` round trip trains, twice, for three epochs of the tiny data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from synthetic import make_images
from test_cli import assert_one_line_error, run

from cnnlab.config import Config
from cnnlab.runs import Run


def copy_run(source: Path, target: Path, **state: Any) -> Path:
    shutil.copytree(source, target)
    recorded = Run(target).state()
    for key, value in state.items():
        setattr(recorded, key, value)
    Run(target).write_state(recorded)
    return target


@pytest.fixture
def workdir(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder holds runs/ with two finished runs (`second` finished last, with a
    higher learning rate) and an interrupted one that started after both."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    copy_run(
        tiny_run,
        runs / "first",
        started_at="2026-01-01T09:00:00+00:00",
        finished_at="2026-01-01T10:00:00+00:00",
    )
    second = copy_run(
        tiny_run,
        runs / "second",
        started_at="2026-01-02T09:00:00+00:00",
        finished_at="2026-01-02T10:00:00+00:00",
    )
    Run(second).write_config(Run(second).config().replace(train={"learning_rate": 0.05}))
    copy_run(tiny_run, runs / "later", status="running", started_at="2026-01-03T10:00:00+00:00")
    return tmp_path


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "left-bar.png"
    Image.fromarray(make_images(np.array([2]), np.random.default_rng(0))[0]).save(path)
    return path


# --- cnnlab runs -------------------------------------------------------------------------------


def test_runs_lists_each_run_on_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "runs")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("name") and len(lines) == 4
    assert lines[1].split()[:2] == ["later", "interrupted"]  # started last: first
    assert {line.split()[1] for line in lines[2:]} == {"finished"}


def test_runs_as_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "runs", "runs", "--json")
    assert code == 0
    listed = json.loads(out)
    assert listed[0]["status"] == "interrupted"  # started last: first
    assert {item["name"] for item in listed} == {"first", "second", "later"}
    assert all(item["monitor"] == "val_accuracy" and item["best_epoch"] for item in listed)


def test_runs_of_an_empty_and_of_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "runs", str(tmp_path))
    assert code == 0 and out.strip() == f"no runs in {tmp_path} yet; train one with `cnnlab train`"
    code, out, _ = run(capsys, "runs", str(tmp_path), "--json")
    assert code == 0 and json.loads(out) == []
    code, out, err = run(capsys, "runs", str(tmp_path / "missing"))
    assert code == 2 and not out
    assert_one_line_error(err, "no such runs folder", "cnnlab train")


def test_a_damaged_run_is_one_word_not_a_crash(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "runs" / "first" / "config.toml").write_text("[train\n", encoding="utf-8")
    code, out, err = run(capsys, "runs")
    assert code == 0 and "Traceback" not in err
    assert next(line for line in out.splitlines() if line.startswith("first")).split()[1] == (
        "unreadable"
    )


# --- cnnlab compare ----------------------------------------------------------------------------


def test_compare_shows_what_differs_and_draws_the_curves(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "compare", "first", "runs/second", "--out", "both.png")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["first", "second"]
    assert lines[1] == "settings that differ"
    assert lines[2].split() == ["train.learning_rate", "0.01", "0.05"]
    assert "run.name" not in out  # where a run went is not a difference
    assert any(line.split()[:2] == ["best", "epoch"] for line in lines)
    assert out.rstrip().endswith("wrote both.png")
    with Image.open(workdir / "both.png") as image:
        assert image.format == "PNG" and image.width > 500


def test_compare_as_json(
    workdir: Path, evaluated_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "compare", str(evaluated_run), "second", "--json", "--out", "c.png"
    )  # fmt: skip
    assert code == 0
    compared = json.loads(out)
    assert [r["label"] for r in compared["runs"]] == ["tiny", "second"]
    assert compared["settings"] == {"train.learning_rate": [0.01, 0.05]}
    metrics = json.loads((evaluated_run / "metrics.json").read_text(encoding="utf-8"))
    assert compared["metrics"]["test accuracy"] == [metrics["test_accuracy"], None]
    assert compared["metrics"]["ECE"] == [metrics["ece"], None]
    assert compared["picture"] == "c.png" and (workdir / "c.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare"], "at least two runs, got 0"),
        (["compare", "first"], "at least two runs, got 1"),
        (["compare", "first", "nope"], "nope: no such run"),
    ],
)
def test_compare_needs_two_runs_that_exist(
    argv: list[str], message: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and not out
    assert_one_line_error(err, message)
    assert not (workdir / "compare.png").exists()


# --- The latest finished run when none is named -------------------------------------------------


def _said_latest(err: str, name: str) -> None:
    """One line on stderr names the run used (its finish time is shown in local time)."""
    lines = [line for line in err.splitlines() if line.startswith("using the latest")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"using the latest finished run: runs/{name} (finished 2026-01-0")


def test_evaluate_uses_the_latest_finished_run(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "evaluate", "--json")
    assert code == 0, err
    _said_latest(err, "second")  # finished last; "later" is newer but was interrupted
    assert json.loads(out)["run"] == "runs/second"
    assert (workdir / "runs" / "second" / "metrics.json").is_file()
    assert not (workdir / "runs" / "first" / "metrics.json").exists()


def test_predict_takes_an_image_alone_or_a_run_and_images(
    workdir: Path, picture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "predict", str(picture))
    assert code == 0, err
    _said_latest(err, "second")
    assert out.startswith(f"{picture}: left ")
    code, out, err = run(capsys, "predict", "runs/first", str(picture), str(picture))
    assert code == 0 and "using the latest" not in err
    assert out.count(f"{picture}: left ") == 2
    code, _, err = run(capsys, "predict", "runs/first")
    assert code == 2
    assert_one_line_error(err, "predict needs image files")


def test_visualize_uses_the_latest_run_for_a_run_picture(
    workdir: Path, picture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "visualize", "history")
    assert code == 0, err
    _said_latest(err, "second")
    assert out.strip() == "wrote runs/second/history.png"
    code, out, err = run(capsys, "visualize", "gradcam", str(picture))  # the image alone
    assert code == 0, err
    _said_latest(err, "second")
    assert out.strip() == "wrote runs/second/gradcam-left-bar.png"
    code, out, err = run(capsys, "visualize", "convpool", str(picture), "-o", "c.png")
    assert code == 0 and "using the latest" not in err  # an image picture: no run


def test_serve_and_export_use_the_latest_finished_run(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cnnlab.export
    import cnnlab.serve

    served: list[Any] = []
    monkeypatch.setattr(cnnlab.serve, "serve", lambda run, *a, **k: served.append(run))
    monkeypatch.setattr(cnnlab.export, "export", lambda run, formats, **k: served.append(run) or {})
    assert run(capsys, "serve")[0] == 0
    assert run(capsys, "export")[0] == 0
    assert served == [Path("runs/second"), Path("runs/second")]


def test_without_a_finished_run_say_to_train_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (["evaluate"], ["export"], ["visualize", "history"], ["predict", "x.png"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and not out
        assert_one_line_error(err, "no finished run in runs/", "cnnlab train")


# --- cnnlab train --print-config ---------------------------------------------------------------


def _train_flags(tiny_npz: Path, tiny_arch: Path, runs: Path) -> list[str]:
    return [
        "--dataset", str(tiny_npz), "--model", str(tiny_arch), "--epochs", "3",
        "--learning-rate", "0.01", "--validation-split", "0.25", "--init-filters", "random",
        "--runs-dir", str(runs),
    ]  # fmt: skip


def test_print_config_writes_nothing_and_draws_the_seed(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    code, out, _ = run(
        capsys, "train", *_train_flags(tiny_npz, tiny_arch, runs), "--preset", "fcn",
        "--print-config",
    )  # fmt: skip
    assert code == 0
    assert not runs.exists()  # nothing trained, no folder made
    printed = Config.from_toml(out)
    assert printed.train.seed >= 0  # -1 ("draw one") is drawn now, so the file re-runs
    assert printed.train.precision != "auto" and printed.train.backend != "auto"
    assert printed.train.steps_per_execution >= 1
    assert printed.model.architecture == str(tiny_arch)  # the flag beats the preset...
    assert printed.model.init_filters == "random"
    assert printed.train.epochs == 3 and printed.train.learning_rate == 0.01
    # ...and the preset's other settings are there (fcn decays its rate more slowly)
    from cnnlab.config import load_config

    assert printed.train.lr_decay == load_config(preset="fcn").train.lr_decay
    assert printed.train.lr_decay != load_config().train.lr_decay


def test_training_from_the_printed_config_reproduces_the_run(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*_train_flags(tiny_npz, tiny_arch, tmp_path), "--seed", "5"]
    code, printed, _ = run(capsys, "train", *flags, "--name", "flags", "--print-config")
    assert code == 0
    config_file = tmp_path / "printed.toml"
    config_file.write_text(printed, encoding="utf-8")
    assert run(capsys, "train", *flags, "--name", "flags")[0] == 0
    assert Run(tmp_path / "flags").config() == Config.from_toml(printed)  # exactly what ran
    assert run(capsys, "train", "--config", str(config_file), "--name", "file")[0] == 0
    first, second = Run(tmp_path / "flags"), Run(tmp_path / "file")
    assert first.config().replace(run={"name": "file"}) == second.config()
    for row_a, row_b in zip(first.history(), second.history(), strict=True):
        # Same process, same kernels, same seed: as tests/training/test_trainer.py's
        # test_same_seed_same_run (rel 1e-5 allows for a threaded reduction's order).
        assert row_a["loss"] == pytest.approx(row_b["loss"], rel=1e-5)
        assert row_a["val_loss"] == pytest.approx(row_b["val_loss"], rel=1e-5)
        assert row_a["val_accuracy"] == row_b["val_accuracy"]
    assert len(first.history()) == len(second.history()) == 3
    assert first.state().best_epoch == second.state().best_epoch
