"""MLflow, read back with its own client: a tiny run logged to a local database and to a real
`mlflow server` on loopback, a tracker that is down, and MLflow not installed."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from synthetic import make_tiny_config

from cnnlab.config import Config
from cnnlab.runs import Run

pytest.importorskip("mlflow")

SRC = Path(__file__).resolve().parents[2] / "src"
ARTIFACTS = {"config.toml", "history.csv", "metrics.json", "model.keras", "run.json"}


def _tracked_config(runs: Path, npz: Path, arch: Path, uri: str, **log: Any) -> Config:
    config = make_tiny_config(runs, npz, arch, epochs=3)
    return config.replace(log={"mlflow": True, "mlflow_uri": uri, **log})


def _experiment(uri: str, name: str, artifacts: Path) -> None:
    """The experiment made beforehand, so its artifacts go to `artifacts`, not the current
    folder (MLflow's default for a local database)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).create_experiment(name, artifact_location=artifacts.as_uri())


def _train_and_evaluate(config: Config) -> Path:
    from cnnlab.evaluation import evaluate
    from cnnlab.training.trainer import train

    run_dir = train(config).run_dir
    evaluate(run_dir)
    return run_dir


def _check_mirror(run_dir: Path) -> None:
    """The MLflow run that mlflow.json names holds what the run folder says."""
    from mlflow.tracking import MlflowClient

    record = json.loads((run_dir / "mlflow.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    mirror = client.get_run(record["run_id"])
    assert mirror.info.run_name == run_dir.name and mirror.info.status == "FINISHED"
    config = tomllib.loads((run_dir / "config.toml").read_text())
    expected = {f"{s}.{k}": str(v) for s, table in config.items() for k, v in table.items()}
    assert mirror.data.params == expected
    history = Run(run_dir).history()
    for column in history[0]:
        if column == "epoch":
            continue
        points = client.get_metric_history(record["run_id"], column)
        assert sorted((m.step, m.value) for m in points) == [
            (int(row["epoch"]), pytest.approx(row[column], rel=1e-12)) for row in history
        ], column
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best_step = json.loads((run_dir / "run.json").read_text())["best_epoch"] - 1
    for name in ("test_loss", "test_accuracy", "macro_f1"):
        assert [(m.step, m.value) for m in client.get_metric_history(mirror.info.run_id, name)] == [
            (best_step, pytest.approx(metrics[name], rel=1e-12))
        ]
    assert {item.path for item in client.list_artifacts(record["run_id"])} >= ARTIFACTS


KILLED_BEFORE_MLFLOW = """
import os, signal, sys
import keras
import cnnlab.training.trainer as training
from cnnlab.config import load_config

class KillAfter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # in the backup, not yet in MLflow (the tracker's callback runs next)
            os.kill(os.getpid(), signal.SIGKILL)

original = training.make_callbacks
def with_killer(*args, **kwargs):
    callbacks, checkpoint = original(*args, **kwargs)
    return [*callbacks[:-1], KillAfter(), callbacks[-1]], checkpoint
training.make_callbacks = with_killer
training.train(load_config(sys.argv[1]))
"""


@pytest.mark.tracking  # MLflow takes ~10 s to create a new database (its migrations)
def test_a_killed_run_mirrored_to_a_local_database(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path
) -> None:
    """Killed after epoch 1 was backed up but before MLflow had it, then resumed: MLflow's
    run is the same one, with every epoch once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _experiment(uri, "tests", tmp_path / "artifacts")
    config = _tracked_config(tmp_path / "runs", tiny_npz, tiny_arch, uri, mlflow_experiment="tests")
    config_file = tmp_path / "run.toml"
    config_file.write_text(config.to_toml())
    script = tmp_path / "killed.py"
    script.write_text(KILLED_BEFORE_MLFLOW)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(script), str(config_file)], env=env, capture_output=True, timeout=300
    )
    assert done.returncode == -9, done.stderr[-2000:]
    first_id = json.loads((config.run_dir / "mlflow.json").read_text())["run_id"]
    run_dir = _train_and_evaluate(config)
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == first_id
    _check_mirror(run_dir)


def test_a_tracker_that_is_down_costs_one_warning(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cnnlab.tracking import mlflow_runs

    uri = f"http://127.0.0.1:{_closed_port()}"
    mlflow_runs._warned.discard(uri)
    with caplog.at_level(logging.WARNING):
        run_dir = _train_and_evaluate(_tracked_config(tmp_path, tiny_npz, tiny_arch, uri))
    assert Run(run_dir).state().finished and (run_dir / "metrics.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(warnings) == 1 and uri in warnings[0] and "\n" not in warnings[0]
    assert not (run_dir / "mlflow.json").exists()


def test_without_mlflow_one_line_says_what_to_install(
    tmp_path: Path,
    tiny_npz: Path,
    tiny_arch: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util

    from cnnlab import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    argv = ["train", "--dataset", str(tiny_npz), "--model", str(tiny_arch), "--epochs", "1"]
    code = cli.main([*argv, "--runs-dir", str(tmp_path), "--log", "tensorboard,mlflow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'cnnlab[mlflow]'" in err[0]
    assert not list(tmp_path.iterdir())  # nothing was started


def test_the_log_flag_takes_a_list_of_trackers(tmp_path: Path) -> None:
    from cnnlab import cli

    parser = cli.build_parser()
    args = parser.parse_args(["train", "--log", "tensorboard", "--log", "mlflow"])
    assert vars(args)["log.mlflow"] is True
    assert vars(parser.parse_args(["train", "--log", "tensorboard"]))["log.mlflow"] is None
    assert vars(parser.parse_args(["train", "--log", "tensorboard,mlflow"]))["log.mlflow"]
    named = vars(parser.parse_args(["train", "--mlflow-uri", "sqlite:///m.db"]))
    assert named["log.mlflow"] is True and named["log.mlflow_uri"] == "sqlite:///m.db"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--log", "wandb"])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on a loopback port, its store in tmp_path; killed at the end."""
    port = _closed_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"),
            *("--artifacts-destination", str(tmp_path / "served-artifacts")),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.25)
        yield uri
    finally:
        server.kill()
        server.wait()


@pytest.mark.tracking
def test_a_run_mirrored_to_an_mlflow_server(
    mlflow_server: str,
    tmp_path: Path,
    tiny_npz: Path,
    tiny_arch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the CLI, with the server named by MLFLOW_TRACKING_URI."""
    from cnnlab import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    argv = [
        *("train", "--dataset", str(tiny_npz), "--model", str(tiny_arch), "--epochs", "2"),
        *("--validation-split", "0.25", "--seed", "7", "--init-filters", "random"),
        *("--runs-dir", str(tmp_path / "runs"), "--name", "served", "--log", "mlflow"),
    ]
    assert cli.main(argv) == 0
    run_dir = tmp_path / "runs" / "served"
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert json.loads((run_dir / "mlflow.json").read_text())["tracking_uri"] == mlflow_server
    _check_mirror(run_dir)
