"""Every run under a runs folder at a glance, newest first, and the latest finished one.

A run folder is a folder holding config.toml or run.json, directly under the runs folder or one
level deeper (a sweep's trials: `runs/<sweep>/trial-000`). Its status is one of:

- `finished`: run.json says so;
- `training`: a live process holds the run's lock (`cnnlab.runs.Run.is_training`);
- `interrupted`: run.json says "running" (or nothing yet) and no process holds the lock: the
  process was killed or stopped; `cnnlab train` with the same settings resumes it;
- `unreadable`: config.toml or run.json cannot be read; the reason is in `problem`.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.config import RunConfig
from cnnlab.errors import CnnlabError, RunError
from cnnlab.monitoring import best_row, recorded_monitor
from cnnlab.runs import Run

DEFAULT_RUNS_DIR = RunConfig().runs_dir
STATUSES = ("finished", "training", "interrupted", "unreadable")
MODEL_SUFFIXES = (".keras", ".onnx")
SEARCH_DEPTH = 2  # runs/<run> and runs/<sweep>/<trial>


@dataclass(frozen=True)
class RunSummary:
    """One run folder in a line: what it trained, how far it got, and how well it did."""

    path: Path
    name: str  # the folder's path below the runs folder, e.g. "lr/trial-003"
    status: str  # one of STATUSES
    dataset: str = ""
    architecture: str = ""
    monitor: str = ""  # the metric that chose the best epoch, as history.csv records it
    best: float | None = None  # its value at the best epoch (so far, while unfinished)
    best_epoch: int | None = None  # 1-based
    epochs: int = 0  # epochs run (so far)
    test_accuracy: float | None = None  # metrics.json, once evaluated
    train_seconds: float | None = None
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    problem: str = ""  # why an unreadable run could not be read

    def to_dict(self) -> dict[str, Any]:
        """A JSON object: the fields, the path as text and the times as ISO 8601 (UTC)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "status": self.status,
            "dataset": self.dataset,
            "architecture": self.architecture,
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "problem": self.problem,
        }


def summarize(path: str | Path, name: str | None = None) -> RunSummary:
    """The summary of one run folder; an unreadable one is a summary saying so, never an
    error, so one damaged folder does not hide the others."""
    run = Run(path)
    name = name or run.name
    try:
        return _summarize(run, name)
    except (CnnlabError, OSError, ValueError, TypeError, KeyError) as exc:  # a damaged file
        problem = " ".join(str(exc).split())
        return RunSummary(run.dir, name, "unreadable", problem=problem)


def _summarize(run: Run, name: str) -> RunSummary:
    config = run.config()
    state = run.state()
    history = run.history()
    if run.is_training():
        status = "training"
    elif state.finished:
        status = "finished"
    else:
        status = "interrupted"
    has_validation = any("val_loss" in row for row in history) or int(state.validation_images) > 0
    monitor = recorded_monitor(config.train.monitor, has_validation=has_validation)
    best, best_epoch = _best(state.best_metrics, state.best_epoch, history, monitor, status)
    metrics = run.metrics() or {}
    test_accuracy = metrics.get("test_accuracy")
    if status == "finished":
        seconds: float | None = float(state.train_seconds)
    else:  # train_seconds is added up when fit returns: count the finished epochs
        seconds = sum(row.get("epoch_seconds", 0.0) for row in history) if history else None
    return RunSummary(
        path=run.dir,
        name=name,
        status=status,
        dataset=str(state.dataset or config.data.dataset),
        architecture=config.model.architecture,
        monitor=monitor,
        best=best,
        best_epoch=best_epoch,
        epochs=int(state.epochs_run) if state.epochs_run is not None else len(history),
        test_accuracy=float(test_accuracy) if isinstance(test_accuracy, int | float) else None,
        train_seconds=seconds,
        started=_parse_time(state.started_at) or _modified(run.config_file),
        finished=(_parse_time(state.finished_at) or _modified(run.state_file))
        if state.finished
        else None,
    )


def _best(
    recorded: dict[str, float],
    epoch: int | None,
    history: list[dict[str, float]],
    monitor: str,
    status: str,
) -> tuple[float | None, int | None]:
    """The monitored value and 1-based epoch: run.json's for a finished run, else the best
    row of history.csv so far."""
    if status == "finished" and epoch is not None and monitor in recorded:
        return float(recorded[monitor]), int(epoch)  # a damaged run.json fails here, as such
    row = best_row(history, monitor)
    if row is None:
        return None, None
    return row[monitor], int(row["epoch"]) + 1


def find_runs(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> list[RunSummary]:
    """Every run under `runs_dir`, newest first (by start time); RunError if the folder does
    not exist. An empty list is an empty (or run-less) folder."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        raise RunError(
            f"{folder}: no such runs folder; train a model first (`cnnlab train` writes "
            f"{DEFAULT_RUNS_DIR}/<name>/) or name the folder that holds the runs"
        )
    found = [summarize(path, path.relative_to(folder).as_posix()) for path in _run_folders(folder)]
    oldest = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return sorted(found, key=lambda s: (s.started or oldest, s.name), reverse=True)


def _run_folders(folder: Path, depth: int = SEARCH_DEPTH) -> Iterator[Path]:
    """The run folders in `folder` and, `depth` allowing, in its sub-folders that are not
    runs themselves (a sweep's trials); hidden folders are skipped."""
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        run = Run(child)
        try:
            is_run = run.config_file.is_file() or run.state_file.is_file()
        except OSError:  # a folder that cannot be looked into: listed as unreadable
            is_run = True
        if is_run:
            yield child
        elif depth > 1:
            yield from _run_folders(child, depth - 1)


def latest_finished(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> RunSummary:
    """The run under `runs_dir` that finished last: what a command uses when no run is named.
    RunError saying to train first when there is none."""
    try:
        runs = find_runs(runs_dir)
    except RunError:
        runs = []
    finished = [s for s in runs if s.status == "finished" and s.finished is not None]
    if finished:
        return max(finished, key=lambda s: (s.finished, s.name))
    others = ", ".join(
        f"{sum(s.status == status for s in runs)} {status}"
        for status in STATUSES
        if any(s.status == status for s in runs)
    )
    found = f" (found {others})" if others else ""
    raise RunError(
        f"no finished run in {Path(runs_dir)}/{found}; train one first with `cnnlab train`, "
        "or name a run folder"
    )


def looks_like_run(path: str | Path) -> bool:
    """Whether a command-line argument names a run rather than an image, so that `predict` and
    `visualize` tell `RUN IMAGE` from `IMAGE` alone (then the latest finished run is used).

    A run: a folder or a `.keras` / `.onnx` file. An image: any other file that exists. A path
    that does not exist is an image if its name ends like one (.png, .jpg...), else a run, so
    a mistyped run folder is reported as a missing run, not read as a picture.
    """
    from cnnlab.data.folders import IMAGE_SUFFIXES

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in MODEL_SUFFIXES:
        return True
    if path.is_file():
        return False
    return suffix not in IMAGE_SUFFIXES


def resolve_run(text: str | Path, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """A run named on the command line: a path as given, else a name under `runs_dir`."""
    path = Path(text)
    if path.exists():
        return path
    under = Path(runs_dir) / path
    if under.exists():
        return under
    raise RunError(
        f"{text}: no such run (neither a folder nor a run under {Path(runs_dir)}/); "
        "`cnnlab runs` lists them"
    )


def format_runs(summaries: list[RunSummary]) -> str:
    """The runs as a table aligned for a terminal, one line each."""
    header = ("name", "status", "dataset", "model", "best", "epoch", "test_acc", "time", "started")
    rows = [header, *(_row(s) for s in summaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _row(s: RunSummary) -> tuple[str, ...]:
    if s.status == "unreadable":
        return (s.name, s.status, *("-",) * 7)
    best = f"{s.monitor} {s.best:.4f}" if s.best is not None else "-"
    epoch = f"{s.best_epoch}/{s.epochs}" if s.best_epoch is not None else f"-/{s.epochs}"
    return (
        s.name,
        s.status,
        _short(s.dataset),
        _short(s.architecture, stem=True),
        best,
        epoch,
        f"{s.test_accuracy:.4f}" if s.test_accuracy is not None else "-",
        format_duration(s.train_seconds),
        format_time(s.started),
    )


def format_duration(seconds: float | None) -> str:
    """51.5 s, 3 min 12 s, 1 h 02 min; "-" for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_time(moment: datetime.datetime | None) -> str:
    """A time as the table and the messages show it: local, to the minute."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else "-"


def _short(text: str, *, stem: bool = False) -> str:
    """A dataset or architecture as the table shows it: a path's last name (an architecture
    file's without .toml or .json, as run names take it), a name as it is."""
    path = Path(text.rstrip("/\\"))
    if stem and path.suffix in (".toml", ".json"):
        return path.stem
    return path.name if ("/" in text or "\\" in text) else text


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _modified(path: Path) -> datetime.datetime | None:
    """A file's modification time: when a run older than run.json's times started/finished."""
    try:
        return datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    except OSError:
        return None


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds") if moment else None
