"""`cnnlab.catalog.listing`: every run under a runs folder, its status, the latest finished one.

The runs are copies of the shared tiny run with their run.json edited, so nothing here trains.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cnnlab.catalog.listing import (
    find_runs,
    format_duration,
    format_runs,
    latest_finished,
    looks_like_run,
    resolve_run,
    summarize,
)
from cnnlab.errors import RunError
from cnnlab.runs import Run


def copy_run(source: Path, target: Path, **state: Any) -> Path:
    """A copy of the run `source` at `target`, with run.json's fields changed as given."""
    shutil.copytree(source, target)
    run = Run(target)
    recorded = run.state()
    for key, value in state.items():
        setattr(recorded, key, value)
    run.write_state(recorded)
    return target


@pytest.fixture(scope="module")
def runs_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder: two finished runs, an interrupted one, a damaged one, a sweep's trial
    one level down, and a folder that is not a run."""
    folder = tmp_path_factory.mktemp("listing") / "runs"
    folder.mkdir()
    copy_run(
        tiny_run,
        folder / "old",
        started_at="2026-01-01T10:00:00+00:00",
        finished_at="2026-01-01T10:05:00+00:00",
    )
    copy_run(
        tiny_run,
        folder / "new",
        started_at="2026-01-03T10:00:00+00:00",
        finished_at="2026-01-03T10:01:00+00:00",
    )
    copy_run(
        tiny_run,
        folder / "killed",
        status="running",
        started_at="2026-01-04T10:00:00+00:00",
        finished_at=None,
    )
    broken = copy_run(tiny_run, folder / "broken", started_at="2026-01-02T00:00:00+00:00")
    (broken / "run.json").write_text("{not json", encoding="utf-8")
    copy_run(
        tiny_run,
        folder / "sweep" / "trial-000",
        started_at="2026-01-02T10:00:00+00:00",
        finished_at="2026-01-05T10:00:00+00:00",  # finished last of all
    )
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.txt").write_text("not a run\n", encoding="utf-8")
    return folder


def test_training_records_its_times_and_leaves_no_lock(tiny_run: Path) -> None:
    import datetime

    state = Run(tiny_run).state()
    assert state.started_at is not None and state.finished_at is not None
    started = datetime.datetime.fromisoformat(state.started_at)
    finished = datetime.datetime.fromisoformat(state.finished_at)
    assert started.utcoffset() == datetime.timedelta(0) and started <= finished
    assert not (tiny_run / ".lock").exists() and not Run(tiny_run).is_training()


def test_every_run_newest_first_with_its_status(runs_dir: Path) -> None:
    found = find_runs(runs_dir)
    by_name = {s.name: s.status for s in found}
    assert by_name == {
        "killed": "interrupted",
        "new": "finished",
        "sweep/trial-000": "finished",
        "old": "finished",
        "broken": "unreadable",
    }
    started = [s.name for s in found if s.started is not None]
    assert started == ["killed", "new", "sweep/trial-000", "old"]  # by run.json's start
    assert found[-1].name == "broken"  # no readable start: last


def test_a_finished_run_summarized_from_its_files(runs_dir: Path, tiny_run: Path) -> None:
    summary = summarize(runs_dir / "new")
    state = Run(tiny_run).state()
    assert summary.monitor == "val_accuracy"
    assert summary.best == state.best_metrics["val_accuracy"]
    assert summary.best_epoch == state.best_epoch and summary.epochs == state.epochs_run
    assert summary.train_seconds == state.train_seconds
    assert summary.architecture.endswith("tiny.toml") and summary.dataset.endswith("tiny.npz")
    assert summary.test_accuracy is None  # not evaluated
    data = summary.to_dict()
    assert data["finished"] == "2026-01-03T10:01:00+00:00" and data["status"] == "finished"
    json.dumps(data)  # a JSON object as it is


def test_an_unfinished_run_shows_its_best_epoch_so_far(runs_dir: Path) -> None:
    summary = summarize(runs_dir / "killed")
    history = Run(runs_dir / "killed").history()
    assert summary.best == max(row["val_accuracy"] for row in history)
    assert summary.train_seconds == pytest.approx(sum(row["epoch_seconds"] for row in history))
    assert summary.finished is None


def test_test_accuracy_once_evaluated(evaluated_run: Path) -> None:
    metrics = json.loads((evaluated_run / "metrics.json").read_text(encoding="utf-8"))
    assert summarize(evaluated_run).test_accuracy == metrics["test_accuracy"]


def test_a_damaged_run_is_listed_with_its_reason(runs_dir: Path) -> None:
    summary = summarize(runs_dir / "broken")
    assert summary.status == "unreadable" and "unreadable run state" in summary.problem


@pytest.mark.parametrize(
    "damage",
    [
        {"best_metrics": {"val_accuracy": "high"}},
        {"epochs_run": "four"},
        {"best_epoch": "last"},
        {"train_seconds": [1]},
    ],
)
def test_wrong_types_in_run_json_are_unreadable_not_a_crash(
    runs_dir: Path, tmp_path: Path, damage: dict[str, Any]
) -> None:
    run_dir = shutil.copytree(runs_dir / "new", tmp_path / "damaged")
    state = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    (run_dir / "run.json").write_text(json.dumps({**state, **damage}), encoding="utf-8")
    summary = summarize(run_dir)
    assert summary.status == "unreadable" and summary.problem
    assert "unreadable" in format_runs([summary])


def test_the_latest_finished_run_is_the_last_to_finish(runs_dir: Path) -> None:
    latest = latest_finished(runs_dir)
    assert latest.name == "sweep/trial-000" and latest.path == runs_dir / "sweep" / "trial-000"


def test_without_a_finished_run_the_latest_says_to_train_first(
    runs_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(RunError, match="no finished run") as raised:
        latest_finished(tmp_path / "missing")
    assert "cnnlab train" in str(raised.value)
    only = tmp_path / "runs"
    shutil.copytree(runs_dir / "killed", only / "killed")
    with pytest.raises(RunError, match=r"found 1 interrupted\)"):
        latest_finished(only)


def test_a_missing_runs_folder_is_an_error_and_an_empty_one_a_list(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such runs folder"):
        find_runs(tmp_path / "missing")
    assert find_runs(tmp_path) == []


def test_the_table_is_aligned(runs_dir: Path) -> None:
    lines = format_runs(find_runs(runs_dir)).splitlines()
    assert lines[0].split() == [
        "name", "status", "dataset", "model", "best", "epoch", "test_acc", "time", "started",
    ]  # fmt: skip
    assert len(lines) == 6
    column = lines[0].index("status")
    for line in lines[1:]:
        assert line[column - 2 : column] == "  " and line[column] != " "
    broken = next(line for line in lines if line.startswith("broken"))
    assert broken.split()[1:3] == ["unreadable", "-"]
    new = next(line for line in lines if line.startswith("new "))
    assert " tiny " in new and "val_accuracy " in new and "2026-01-03" in new


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0.57, "0.6 s"), (59.94, "59.9 s"), (192, "3 min 12 s"), (3720, "1 h 02 min")],
)
def test_durations(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


# --- Live, killed, and two trainers on one run ------------------------------------------------


def test_a_held_lock_reads_as_training_and_is_removed_after(runs_dir: Path, tmp_path: Path) -> None:
    run_dir = shutil.copytree(runs_dir / "killed", tmp_path / "live")
    with Run(run_dir).training():
        assert summarize(run_dir).status == "training"
        assert (run_dir / ".lock").is_file()
    assert summarize(run_dir).status == "interrupted"
    assert not (run_dir / ".lock").exists()


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path: Path) -> None:
    refused = pytest.raises(RunError, match="another process is training")
    with Run(tmp_path).training(), refused, Run(tmp_path).training(wait_s=0.05):
        pass
    with Run(tmp_path).training():  # free again once the first has finished
        pass


def test_overwrite_never_deletes_a_run_another_process_trains(
    runs_dir: Path, tmp_path: Path
) -> None:
    """`--overwrite` (`Run.remove`) of a run whose lock is held is refused and deletes nothing;
    once the trainer has finished, it removes the folder."""
    run_dir = shutil.copytree(runs_dir / "killed", tmp_path / "live")
    before = sorted(p.name for p in run_dir.iterdir())
    with Run(run_dir).training(), pytest.raises(RunError, match="another process is training"):
        Run(run_dir).remove()
    assert sorted(p.name for p in run_dir.iterdir()) == before
    Run(run_dir).remove()
    assert not run_dir.exists()


def test_asking_changes_nothing(runs_dir: Path) -> None:
    before = sorted(p.name for p in (runs_dir / "killed").iterdir())
    assert not Run(runs_dir / "killed").is_training()
    assert sorted(p.name for p in (runs_dir / "killed").iterdir()) == before  # no .lock made


HOLDER = """
import sys, time
from cnnlab.runs import Run
with Run(sys.argv[1]).training():
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_killed_trainer_leaves_an_interrupted_run(runs_dir: Path, tmp_path: Path) -> None:
    """The kernel drops the lock with the process, however it ends: SIGKILL, no clean-up."""
    run_dir = shutil.copytree(runs_dir / "killed", tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        assert summarize(run_dir).status == "training"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run_dir / ".lock").exists()  # left behind by the kill...
    assert summarize(run_dir).status == "interrupted"  # ...but nobody holds it


# --- What a command-line argument names -------------------------------------------------------


def test_a_run_is_a_folder_or_a_model_file_and_an_image_any_other_file(tmp_path: Path) -> None:
    assert looks_like_run(tmp_path)
    assert looks_like_run(tmp_path / "model.keras") and looks_like_run(tmp_path / "m.ONNX")
    photo = tmp_path / "photo"  # a picture without a suffix: a file, so not a run
    photo.write_bytes(b"\x89PNG")
    assert not looks_like_run(photo)
    # Missing: a picture's name is an image (predict then says it is missing), anything else
    # a run (a mistyped run folder is reported as a run that is not there).
    assert not looks_like_run(tmp_path / "shoe.png") and not looks_like_run("shoe.JPG")
    assert looks_like_run(tmp_path / "runs" / "typo")


def test_a_run_by_path_or_by_name(runs_dir: Path) -> None:
    assert resolve_run(runs_dir / "new") == runs_dir / "new"
    assert resolve_run("new", runs_dir) == runs_dir / "new"
    assert resolve_run("sweep/trial-000", runs_dir) == runs_dir / "sweep" / "trial-000"
    with pytest.raises(RunError, match="no such run"):
        resolve_run("nope", runs_dir)
