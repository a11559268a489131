"""Tests for cnnlab.runs: the run folder's files, read and written through `Run`.

Every test works on a tiny folder made in tmp_path by hand (Run's own writers, or text), so
nothing here trains or loads a model.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest

from cnnlab import _io
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError, ConfigError, RunError
from cnnlab.runs import (
    Run,
    RunState,
    read_sidecar,
    sidecar_class_names,
    sidecar_path,
)

CLASSES = ["shirt", "shoe", "bag"]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `folder`, by relative path."""
    return {
        str(path.relative_to(folder)): (path.read_bytes() if path.is_file() else None)
        for path in sorted(folder.rglob("*"))
    }


def _finished_run(folder: Path) -> Run:
    """A run folder written through Run's own writers: config, state, summary, history,
    metrics and a backup, as training and evaluation leave them."""
    run = Run(folder)
    run.make_dir()
    run.write_config(load_config(overrides={"train.monitor": "val_loss"}))
    run.write_state(RunState(status="finished", class_names=CLASSES, epochs_run=2))
    run.write_summary("Model: tiny\n")
    run.write_history(
        [
            {"epoch": 0.0, "loss": 1.0, "val_loss": 1.1},
            {"epoch": 1.0, "loss": 0.5, "val_loss": 0.6},
        ]
    )
    run.write_metrics({"test_accuracy": 0.9})
    run.backup_dir.mkdir()
    (run.state_backup).write_bytes(b"npz")
    return run


# --- Opening: a folder, a .keras file, an .onnx file ---------------------------------------


def test_open_a_folder(tmp_path: Path) -> None:
    run = Run.open(tmp_path)
    assert run.dir == tmp_path and run.name == tmp_path.name
    assert run.model_file == tmp_path / "model.keras"
    assert not run.is_onnx and run.onnx_file == tmp_path / "model.onnx"
    assert run.state_file == tmp_path / "run.json"
    assert run.state_backup == tmp_path / "backup" / "state.npz"


def test_open_a_keras_file_gives_its_folder(tmp_path: Path) -> None:
    model = tmp_path / "best.keras"
    model.write_bytes(b"")
    run = Run.open(model)
    assert run.dir == tmp_path and run.model_file == model
    assert not run.is_onnx and run.history_file == tmp_path / "history.csv"


@pytest.mark.parametrize("name", ["model.onnx", "other.onnx", "MODEL.ONNX"])
def test_open_an_onnx_file_gives_its_folder_and_is_onnx(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    run = Run.open(path)
    assert run.dir == tmp_path
    assert run.is_onnx and run.onnx_file == path and run.model_file == path


def test_repr_says_read_only() -> None:
    assert repr(Run("runs/a")) == "Run('runs/a')"
    assert repr(Run("runs/a", read_only=True)) == "Run('runs/a', read_only=True)"


# --- Read-only: every write does nothing -----------------------------------------------------


def test_a_read_only_run_leaves_the_folder_byte_identical(tmp_path: Path) -> None:
    _finished_run(tmp_path)
    (tmp_path / ".model.keras.x1y2.keras").write_bytes(b"leftover")  # make_dir would remove it
    before = _snapshot(tmp_path)
    run = Run(tmp_path, read_only=True)

    run.write_config(load_config(overrides={"train.monitor": "accuracy"}))
    run.write_state(RunState(status="running", class_names=["x"]))
    run.write_summary("changed\n")
    run.write_history([{"epoch": 0.0, "loss": 9.0}])
    run.write_metrics({"test_accuracy": 0.1})
    run.make_dir()
    run.remove_backup()
    run.remove()
    assert _snapshot(tmp_path) == before

    # ... and it still reads as any other run.
    assert run.state().class_names == CLASSES
    assert run.metrics() == {"test_accuracy": 0.9}
    assert [row["loss"] for row in run.history()] == [1.0, 0.5]
    assert run.monitor() == "val_loss"


def test_a_read_only_run_creates_nothing(tmp_path: Path) -> None:
    run = Run(tmp_path / "new" / "run", read_only=True)
    run.make_dir()
    run.write_state(RunState())
    run.write_metrics({"a": 1})
    run.check_writable()
    assert not (tmp_path / "new").exists()


def test_a_read_only_run_skips_the_write_check(tmp_path: Path) -> None:
    # A folder below a file can never be written: the check says so, unless read-only.
    (tmp_path / "file").write_text("x")
    Run(tmp_path / "file" / "run", read_only=True).check_writable()
    with pytest.raises(RunError, match="cannot write the run folder"):
        Run(tmp_path / "file" / "run").check_writable()


# --- run.json ---------------------------------------------------------------------------------


def test_state_without_run_json_is_new(tmp_path: Path) -> None:
    state = Run(tmp_path).state()
    assert state == RunState() and state.status == "new"
    assert not state.finished and not state.running


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"status": "fini', b"", b"\xff\xfe\x00garbage", b"[1, 2]", b'"finished"'],
    ids=["bad-json", "cut-short", "empty", "not-utf8", "a-list", "a-string"],
)
def test_a_corrupt_run_json_is_one_clear_run_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "run.json").write_bytes(content)
    with pytest.raises(RunError) as caught:
        Run(tmp_path).state()
    message = str(caught.value)
    assert str(tmp_path / "run.json") in message and "--overwrite" in message
    assert "\n" not in message
    assert caught.value.__cause__ is None  # `from None`: one line, not a chained traceback


def test_state_round_trips_and_keeps_unknown_keys(tmp_path: Path) -> None:
    run = Run(tmp_path)
    state = RunState(
        status="finished",
        class_names=CLASSES,
        input_shape=[28, 28, 1],
        epochs_run=3,
        best_epoch=2,
        best_metrics={"val_accuracy": 0.9},
        extra={"from_a_newer_version": {"x": 1}},
    )
    run.write_state(state)
    data = json.loads(run.state_file.read_text())
    assert data["from_a_newer_version"] == {"x": 1} and "extra" not in data
    assert "backend" not in data  # None fields are left out
    again = run.state()
    assert again == state and again.finished


def test_best_metrics_are_left_out_until_an_epoch_ran() -> None:
    assert "best_metrics" not in RunState(best_metrics={"a": 1.0}).to_dict()
    assert RunState(best_metrics={"a": 1.0}, epochs_run=1).to_dict()["best_metrics"] == {"a": 1.0}


def test_a_written_file_has_an_ordinary_mode_and_no_temp_file_left(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.write_state(RunState())
    run.write_metrics({"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (run.state_file.stat().st_mode & 0o777) == (0o666 & ~umask)  # not mkstemp's 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "run.json"]


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path)
    run.write_state(RunState(status="running"))
    before = _snapshot(tmp_path)

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        run.write_state(RunState(status="finished"))
    assert _snapshot(tmp_path) == before  # old content, and the temporary file removed
    assert run.state().status == "running"


# --- Class names: run.json, else the export's sidecar ----------------------------------------


def _onnx_with_sidecar(folder: Path, names: object) -> Path:
    path = folder / "model.onnx"
    path.write_bytes(b"onnx")
    sidecar_path(path).write_text(json.dumps({"class_names": names}))
    return path


def test_class_names_come_from_run_json(tmp_path: Path) -> None:
    _finished_run(tmp_path)
    path = _onnx_with_sidecar(tmp_path, ["a", "b", "c"])
    assert Run(tmp_path).class_names() == CLASSES
    assert Run.open(path).class_names() == CLASSES  # run.json first, even for an export


def test_class_names_fall_back_to_the_sidecar(tmp_path: Path) -> None:
    path = _onnx_with_sidecar(tmp_path, ["a", "b", 3])
    assert Run.open(path).class_names() == ["a", "b", "3"]


@pytest.mark.parametrize(
    "run_json", [None, "{broken", json.dumps({"status": "new", "class_names": []})]
)
def test_an_unreadable_or_empty_run_json_falls_back_to_the_sidecar(
    tmp_path: Path, run_json: str | None
) -> None:
    if run_json is not None:
        (tmp_path / "run.json").write_text(run_json)
    path = _onnx_with_sidecar(tmp_path, ["a", "b"])
    assert Run.open(path).class_names() == ["a", "b"]


def test_no_class_names_anywhere_is_none(tmp_path: Path) -> None:
    assert Run(tmp_path).class_names() is None
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"")
    sidecar_path(keras_file).write_text(json.dumps({"class_names": ["a"]}))
    assert Run.open(keras_file).class_names() is None  # the sidecar is an export's only
    onnx_file = tmp_path / "bare.onnx"
    onnx_file.write_bytes(b"")
    assert Run.open(onnx_file).class_names() is None  # no sidecar at all
    (tmp_path / "run.json").write_text(json.dumps({"class_names": "abc"}))
    assert Run(tmp_path).class_names() is None  # not a list


def test_class_names_are_strings(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"class_names": [0, 1, "two"]}))
    assert Run(tmp_path).class_names() == ["0", "1", "two"]


@pytest.mark.parametrize(
    ("content", "info"),
    [
        (None, {}),
        ("{broken", {}),
        ("[1, 2]", {}),
        ('{"class_names": ["a"], "model_name": "m"}', {"class_names": ["a"], "model_name": "m"}),
    ],
)
def test_read_sidecar(tmp_path: Path, content: str | None, info: dict[str, object]) -> None:
    path = tmp_path / "model.onnx"
    assert sidecar_path(path) == tmp_path / "model.onnx.json"
    if content is not None:
        sidecar_path(path).write_text(content)
    assert read_sidecar(path) == info


def test_sidecar_class_names() -> None:
    assert sidecar_class_names({"class_names": ["a", 2]}) == ["a", "2"]
    assert sidecar_class_names({"class_names": "ab"}) is None
    assert sidecar_class_names({}) is None


# --- history.csv -------------------------------------------------------------------------------


def test_history_without_a_file_is_empty(tmp_path: Path) -> None:
    assert Run(tmp_path).history() == []


def test_a_repeated_epoch_reads_back_once_with_its_last_row(tmp_path: Path) -> None:
    # A kill between the CSV row and the backup: the resumed run writes epoch 1 again.
    (tmp_path / "history.csv").write_text(
        "epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n1,0.7,0.8\n2,0.8,0.7\n"
    )
    history = Run(tmp_path).history()
    assert [row["epoch"] for row in history] == [0.0, 1.0, 2.0]
    assert history[1] == {"epoch": 1.0, "accuracy": 0.7, "loss": 0.8}


def test_history_reads_na_as_missing_and_sorts_by_epoch(tmp_path: Path) -> None:
    # Keras' CSVLogger writes "NA" in val_ columns when there is no validation.
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n1,0.5,NA\n0,1.0,\n2,0.4,0.45\n")
    assert Run(tmp_path).history() == [
        {"epoch": 0.0, "loss": 1.0},
        {"epoch": 1.0, "loss": 0.5},
        {"epoch": 2.0, "loss": 0.4, "val_loss": 0.45},
    ]


def test_history_skips_a_line_that_is_not_numbers(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.5\n2,0.4e\n")
    assert [row["epoch"] for row in Run(tmp_path).history()] == [0.0, 1.0]


def test_history_skips_a_line_cut_short_in_its_first_field(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("epoch,loss,accuracy\n0,1.0,0.5\n1,0.5,0.7\n1")
    assert Run(tmp_path).history()[1] == {"epoch": 1.0, "loss": 0.5, "accuracy": 0.7}


def test_write_history_round_trips_and_keeps_nan(tmp_path: Path) -> None:
    run = Run(tmp_path)
    history = [
        {"epoch": 0.0, "loss": 1.0, "accuracy": 0.123456789012345},
        {"epoch": 1.0, "loss": math.nan},  # no accuracy: written as nan
    ]
    run.write_history(history)
    text = run.history_file.read_text()
    assert text.splitlines()[0] == "epoch,loss,accuracy"
    assert text.splitlines()[1].startswith("0,")  # epoch as an integer
    back = run.history()
    assert back[0] == history[0]  # repr keeps every digit
    assert back[1]["epoch"] == 1.0 and math.isnan(back[1]["loss"])
    assert math.isnan(back[1]["accuracy"])


def test_write_history_of_nothing_writes_nothing(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.write_history([])
    assert not run.history_file.exists()


# --- metrics.json ------------------------------------------------------------------------------


def test_metrics_round_trip(tmp_path: Path) -> None:
    run = Run(tmp_path)
    assert run.metrics() is None
    run.write_metrics({"test_accuracy": 0.91, "per_class": {"shoe": 0.8}})
    assert run.metrics() == {"test_accuracy": 0.91, "per_class": {"shoe": 0.8}}


@pytest.mark.parametrize(
    ("content", "warns"),
    [(b"{broken", True), (b"\xff\xfe", True), (b"[0.9]", False)],
    ids=["bad-json", "not-utf8", "a-list"],
)
def test_unreadable_metrics_are_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, warns: bool
) -> None:
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="cnnlab.runs"):
        assert Run(tmp_path).metrics() is None
    # A broken file is named in a warning; valid JSON that is not an object is just ignored.
    assert (str(path) in caplog.text and "unreadable" in caplog.text) is warns


# --- config.toml and the monitor ----------------------------------------------------------------


def test_config_and_monitor_from_config_toml(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.write_config(load_config(overrides={"train.monitor": "val_loss", "train.epochs": 7}))
    config = run.config()
    assert config.train.monitor == "val_loss" and config.train.epochs == 7
    assert run.monitor() == "val_loss"


def test_config_without_config_toml_says_not_a_run_folder(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with pytest.raises(RunError, match=r"not a run folder \(no config\.toml\).*cnnlab train"):
        run.config()
    assert run.monitor() == "val_accuracy"
    assert run.monitor("accuracy") == "accuracy"


@pytest.mark.parametrize(
    "text",
    ["[train\nmonitor = ", "[train]\nnot_a_setting = 1\n", '[train]\nepochs = "many"\n'],
    ids=["bad-toml", "unknown-key", "bad-type"],
)
def test_a_corrupt_config_toml_is_a_config_error_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    run = Run(tmp_path)
    with pytest.raises(ConfigError) as caught:
        run.config()
    assert str(tmp_path / "config.toml") in str(caught.value)
    assert isinstance(caught.value, CnnlabError)
    assert run.monitor("val_auc") == "val_auc"  # the monitor falls back, it does not fail


# --- Housekeeping --------------------------------------------------------------------------------


def test_check_writable_creates_nothing(tmp_path: Path) -> None:
    Run(tmp_path / "a" / "b").check_writable()  # checks the nearest existing folder
    Run(tmp_path).check_writable()
    assert list(tmp_path.iterdir()) == []


def test_make_dir_creates_the_folder_and_removes_leftover_temp_files(tmp_path: Path) -> None:
    run = Run(tmp_path / "runs" / "tiny")
    run.make_dir()
    assert run.dir.is_dir()
    run.backup_dir.mkdir()
    leftovers = [run.dir / ".model.keras.ab12cd.keras", run.backup_dir / ".state.npz.x9.npz"]
    kept = [run.dir / ".hidden", run.dir / "history.csv", run.backup_dir / "state.npz"]
    for path in leftovers + kept:
        path.write_bytes(b"x")
    run.make_dir()
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)


def test_remove_backup_removes_only_the_backup(tmp_path: Path) -> None:
    run = _finished_run(tmp_path)
    run.remove_backup()
    assert not run.backup_dir.exists()
    assert {"run.json", "config.toml", "history.csv", "metrics.json", "summary.txt"} == {
        p.name for p in tmp_path.iterdir()
    }
    run.remove_backup()  # no backup: nothing to do, no error


def test_remove_deletes_the_folder(tmp_path: Path) -> None:
    run = _finished_run(tmp_path / "run")
    run.remove()
    assert not run.dir.exists()
    run.remove()  # already gone: no error


# --- The model file (only what needs no Keras model) ----------------------------------------------


def test_a_missing_model_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no model found; train it first"):
        Run(tmp_path).load_model()
    with pytest.raises(RunError, match="no model found; check the path"):
        Run.open(tmp_path / "elsewhere.keras").load_model()
