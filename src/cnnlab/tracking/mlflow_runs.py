"""A run mirrored to MLflow: its settings as params, its epochs and test figures as metrics,
its files as artifacts, in an MLflow run named after the run folder.

Everything is read from the run folder (config.toml, history.csv, metrics.json, its files), so
MLflow holds a copy of what the folder says, never anything the folder lacks. Where the MLflow
run lives is written to the folder's `mlflow.json` when the run is made; a resumed training and
`cnnlab evaluate` log to the same MLflow run.

A tracker that cannot be reached costs one warning, and the work goes on without it: the server
is probed once per session (a TCP connection, `PROBE_SECONDS` at most), MLflow's HTTP retries
are kept short while cnnlab calls it, and after a failure the session logs nothing more.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import socket
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError
from cnnlab.runs import Run

if TYPE_CHECKING:
    from cnnlab.config import Config, LogConfig
    from cnnlab.runs import History

log = logging.getLogger(__name__)

INSTALL = "pip install 'cnnlab[mlflow]'"
PROBE_SECONDS = 5.0
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
"""MLflow's HTTP settings while cnnlab calls it, unless set in the environment (its defaults,
7 retries with backoff and a 120 s timeout, would stall training for minutes)."""

_warned: set[str] = set()  # the tracking URIs this process has warned about


def require(config: LogConfig) -> None:
    """Fail before any work when MLflow is asked for but not installed."""
    if config.mlflow and importlib.util.find_spec("mlflow") is None:
        raise CnnlabError(f"--log mlflow needs MLflow, which is not installed: {INSTALL}")


def tracking_uri(config: LogConfig) -> str:
    """`--mlflow-uri`, else $MLFLOW_TRACKING_URI, else MLflow's default (a local database)."""
    import mlflow

    return config.mlflow_uri or mlflow.get_tracking_uri()


def flat_params(config: Config) -> dict[str, str]:
    """The configuration as MLflow params: dotted keys (`train.epochs`), values as text."""
    return {key: str(value) for key, value in config.dotted().items()}


class Session:
    """One run folder's connection to its MLflow run; a failure turns it off with one warning."""

    def __init__(self, uri: str, run_id: str | None = None) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client: Any = None
        self.logged_through = -1  # the last epoch whose metrics MLflow holds
        problem = _unreachable(uri)
        if problem:
            self._warn(problem)
            return
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            self._warn(f"MLflow is not installed ({INSTALL})")
            return
        self.client = MlflowClient(uri)

    @property
    def active(self) -> bool:
        return self.client is not None and self.run_id is not None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`MlflowClient.<method>(...)`, or None once the tracker has failed."""
        if self.client is None:
            return None
        try:
            with _quick_http():
                return getattr(self.client, method)(*args, **kwargs)
        except Exception as exc:  # MLflow raises many kinds for a server that is gone
            self._warn(" ".join(str(exc).split())[:200] or type(exc).__name__)
            self.client = None
            return None

    def log_history(self, history: History, through: int) -> None:
        """The epochs of `history` up to `through` not logged yet, one metric per column,
        the step being the 0-based epoch."""
        rows = [row for row in history if self.logged_through < int(row["epoch"]) <= through]
        if not rows or not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(row["epoch"]))
            for row in rows
            for key, value in row.items()
            if key != "epoch" and math.isfinite(value)
        ]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.call("log_batch", self.run_id, metrics=metrics[start : start + 1000])
        if self.client is not None:
            self.logged_through = int(rows[-1]["epoch"])

    def upload(self, files: list[Path]) -> None:
        """Each file as an artifact at the top of the MLflow run."""
        for path in files:
            if self.active:
                self.call("log_artifact", self.run_id, str(path))

    def _warn(self, problem: str) -> None:
        if self.uri not in _warned:
            _warned.add(self.uri)
            log.warning("MLflow at %s: %s; going on without it", self.uri, problem)


def start(run: Run, config: Config) -> Session:
    """The MLflow run of `run`: the one mlflow.json names (a resumed run), else a new one in
    the configured experiment, named after the run folder, with the configuration as params."""
    record = run.mlflow_run()
    if record is not None:
        session = Session(record["tracking_uri"], record["run_id"])
        session.call("update_run", record["run_id"], status="RUNNING")
        done = session.call("get_metric_history", record["run_id"], "loss") or []
        session.logged_through = max((int(m.step) for m in done), default=-1)
        return session
    session = Session(tracking_uri(config.log))
    name = config.log.mlflow_experiment
    experiment = session.call("get_experiment_by_name", name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        experiment_id = session.call("create_experiment", name)
    if experiment_id is None:
        return session
    created = session.call(
        "create_run",
        experiment_id,
        run_name=run.name,
        tags={"cnnlab.run_dir": str(run.dir.resolve()), **_state_tags(run)},
    )
    if created is None:
        return session
    session.run_id = created.info.run_id
    from mlflow.entities import Param

    params = [Param(key, value) for key, value in flat_params(config).items()]
    for begin in range(0, len(params), 100):  # MLflow's limit of params per batch
        session.call("log_batch", session.run_id, params=params[begin : begin + 100])
    run.write_mlflow_run(
        {"tracking_uri": session.uri, "experiment_id": experiment_id, "run_id": session.run_id}
    )
    log.info("logging to MLflow at %s: experiment %s, run %s", session.uri, name, run.name)
    return session


def finish(run: Run) -> None:
    """At the end of training: the run folder's files (model, config, history, summary,
    run.json, pictures) as artifacts, and the MLflow run marked finished."""
    session = _reopen(run)
    if session is None:
        return
    session.upload(_artifacts(run))
    if session.active:
        session.call("set_terminated", session.run_id, "FINISHED")


def log_evaluation(run: Run, metrics: Mapping[str, Any], step: int) -> None:
    """After `cnnlab evaluate`, when the run is tracked: the test metrics (the numbers of
    metrics.json; `tta_` before test-time augmentation's) at `step`, the kept model's epoch,
    and metrics.json and the pictures as artifacts."""
    session = _reopen(run)
    if session is None:
        return
    from mlflow.entities import Metric

    tta = _numbers(metrics.get("tta", {}))
    numbers = {**_numbers(metrics), **{f"tta_{key}": value for key, value in tta.items()}}
    now = int(time.time() * 1000)
    found = [Metric(key, value, now, step) for key, value in numbers.items()]
    session.call("log_batch", session.run_id, metrics=found)
    session.upload([path for path in _artifacts(run) if path.suffix in (".json", ".png")])


def _reopen(run: Run) -> Session | None:
    record = run.mlflow_run()
    if record is None:
        return None
    session = Session(record["tracking_uri"], record["run_id"])
    return session if session.active else None


def _artifacts(run: Run) -> list[Path]:
    """The run folder's own files: not its logs, backup or mlflow.json, nor temporary files."""
    return sorted(
        path
        for path in run.dir.iterdir()
        if path.is_file() and not path.name.startswith(".") and path != run.mlflow_file
    )


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _state_tags(run: Run) -> dict[str, str]:
    state = run.state()
    return {
        "cnnlab.version": state.cnnlab_version,
        "cnnlab.backend": str(state.backend),
        "cnnlab.dataset": state.dataset,
    }


def _unreachable(uri: str) -> str:
    """Why an HTTP tracking server cannot be reached ("" when it can, or is not a server)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        return f"cannot connect ({exc.strerror or exc})"
    return ""


@contextlib.contextmanager
def _quick_http() -> Iterator[None]:
    """MLflow's HTTP retries kept short (`QUICK_HTTP`) where the environment sets none."""
    added = [name for name in QUICK_HTTP if name not in os.environ]
    os.environ.update({name: QUICK_HTTP[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
