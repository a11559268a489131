"""Data-parallel training on JAX's distributed runtime: processes, shards, one run folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from boards import board_mismatches

from cnnlab.cli import _without_option, main
from cnnlab.config import Config
from cnnlab.errors import CnnlabError
from cnnlab.training.distributed import (
    ENV_COORDINATOR,
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    Cluster,
    Processes,
    cluster_from,
    launch,
)

TESTS = Path(__file__).resolve().parents[1]
WORKER = TESTS / "distributed_worker.py"


def test_a_cluster_comes_from_flags_then_cnnlab_variables_then_a_launcher() -> None:
    assert cluster_from(environ={}) is None
    assert cluster_from(devices=2, environ={}) == Cluster(devices=2)
    env = {ENV_COORDINATOR: "10.0.0.1:1234", ENV_NUM_PROCESSES: "4", ENV_PROCESS_ID: "3"}
    assert cluster_from(environ=env) == Cluster("10.0.0.1:1234", 4, 3)
    assert cluster_from(process_id=1, environ=env) == Cluster("10.0.0.1:1234", 4, 1)
    jax_named = {"JAX_COORDINATOR_ADDRESS": "h:1", ENV_NUM_PROCESSES: "2", ENV_PROCESS_ID: "0"}
    assert cluster_from(environ=jax_named) == Cluster("h:1", 2, 0)
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5"}
    assert cluster_from(environ=slurm) == Cluster(None, None, None)  # JAX reads the rest
    assert cluster_from(environ={"SLURM_NTASKS": "1"}) is None
    assert Cluster("127.0.0.1:9", 2, 0).loopback
    assert not Cluster("10.0.0.1:9", 2, 0).loopback


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"coordinator": "10.0.0.1:1234"}, "needs --coordinator HOST:PORT, --num-processes"),
        ({"coordinator": "nohost", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
        ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, "--process-id must be"),
        ({"devices": -1}, "--devices must be >= 1"),
    ],
)
def test_a_half_named_cluster_is_one_clear_error(flags: dict, message: str) -> None:
    with pytest.raises(CnnlabError, match=message):
        cluster_from(environ={}, **flags)


def test_each_process_feeds_its_slice_of_every_global_batch() -> None:
    class Batches:  # 10 images in batches of 4: the last batch holds 2
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            rows = np.arange(10)[i * 4 : (i + 1) * 4]
            return rows, -rows

        def on_epoch_end(self) -> None:
            pass

    names = ("cpu:0", "cpu:1")
    first = Processes(0, 2, names).shard(Batches())
    second = Processes(1, 2, names).shard(Batches())
    assert [first[i][0].tolist() for i in range(3)] == [[0, 1], [4, 5], [8]]
    assert [second[i][0].tolist() for i in range(3)] == [[2, 3], [6, 7], [9]]
    assert second[0][1].tolist() == [-2, -3]
    odd = Processes(0, 1, ("cpu:0", "cpu:1", "cpu:2")).shard(Batches())
    assert len(odd) == 2  # the last batch (2 images) is smaller than the 3 devices: left out
    assert odd[1][0].tolist() == [4, 5, 6]
    with pytest.raises(CnnlabError, match="multiple of 3"):
        Processes(0, 1, ("cpu:0", "cpu:1", "cpu:2")).check_batch_size(32)


def test_other_backends_get_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
        pytest.skip("the suite runs on JAX")
    assert main(["train", "--processes", "2", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "KERAS_BACKEND=jax" in err


def test_a_process_left_waiting_for_a_gone_partner_is_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Process 1 finishes at once; process 0 would wait forever (as in a collective whose
    # partner has exited). launch stops it after the grace and says so, instead of hanging.
    program = [
        sys.executable,
        "-c",
        "import os, time; time.sleep(600 if os.environ['CNNLAB_PROCESS_ID'] == '0' else 0)",
    ]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    started = time.monotonic()
    with caplog.at_level("ERROR", logger="cnnlab.training.distributed"):
        code = launch([], 2, program=program, env=env, straggler_seconds=1.0)

    assert code == 1
    assert time.monotonic() - started < 60
    [record] = caplog.records
    assert "process 0 still running" in record.getMessage()
    assert "after process 1 finished" in record.getMessage()


def test_processes_flag_is_dropped_for_the_children() -> None:
    argv = ["-v", "train", "--processes", "2", "--epochs", "1", "--processes=3"]
    assert _without_option(argv, "--processes") == ["-v", "train", "--epochs", "1"]


def test_two_processes_train_as_one(tmp_path: Path, tiny_npz: Path, tiny_arch: Path) -> None:
    """Two processes on 127.0.0.1 end with identical weights, equal to one process training
    on the same global batches, and only process 0 writes the run folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNNLAB_", "SLURM_", "OMPI_"))}
    env.update(KERAS_BACKEND="jax", PYTHONPATH=_pythonpath())
    # Global batch 16: 180 training images make 11 batches and one of 4, 60 validation images
    # 3 and one of 12, all split evenly over 2 processes: both runs see exactly the same data.
    args = [str(tiny_npz), str(tiny_arch), str(tmp_path / "two"), str(tmp_path / "w"), "16"]
    program = [sys.executable, str(WORKER)]
    assert launch(args, 2, program=program, env=env) == 0
    alone = [str(tiny_npz), str(tiny_arch), str(tmp_path / "one"), str(tmp_path / "alone"), "16"]
    subprocess.run([*program, *alone], env=env, check=True, cwd=TESTS, timeout=600)

    first, second, one = (np.load(tmp_path / f"{name}.npz") for name in ("w0", "w1", "alone0"))
    for key in first.files:
        assert np.array_equal(first[key], second[key])  # replicas never drift apart
        # Same batches, same float32 arithmetic, except that each gradient is summed in two
        # halves and then added across processes: a different order of float32 additions,
        # which moved no weight by more than 1e-7 here. One Adam step moves a weight by up to
        # the learning rate (0.01); a wrong shard or batch order would differ by that much.
        np.testing.assert_allclose(first[key], one[key], atol=1e-4, rtol=0)

    runs = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert runs == ["tiny"]
    run = tmp_path / "two" / "tiny"
    assert (run / "model.keras").is_file() and not (run / "backup").exists()
    assert len((run / "history.csv").read_text().splitlines()) == 3  # a header and 2 epochs
    assert '"processes": 2' in (run / "run.json").read_text()
    # TensorBoard: process 0 alone writes, one event file per folder, the curves history.csv's.
    assert [len(list((run / "logs" / n).iterdir())) for n in ("train", "validation")] == [1, 1]
    assert board_mismatches(run) == []


def _pythonpath() -> str:
    import cnnlab

    src = str(Path(cnnlab.__file__).parent.parent)
    return os.pathsep.join([src, str(TESTS), os.environ.get("PYTHONPATH", "")])


def test_an_interrupted_run_is_not_resumed_by_several_processes(
    tmp_path: Path, tiny_config: Callable[..., Config], tiny_npz: Path, tiny_arch: Path
) -> None:
    from cnnlab.runs import Run, RunState
    from cnnlab.training.trainer import Plan, _decide

    config = tiny_config(tmp_path, tiny_npz, tiny_arch)
    run = Run(config.run_dir)
    team = Processes(0, 2, ("cpu:0", "cpu:1"))
    plan = _decide(config, run, team)  # a new run: its config
    assert plan is not None and not plan.resuming and plan.first_epoch == 0
    assert "seed = 7" in plan.config.to_toml()
    assert Plan.from_text(plan.to_text()) == plan  # as the other processes receive it
    run.make_dir()
    run.write_state(RunState(status="finished"))
    assert _decide(config, run, team) is None  # nothing to do
    run.write_state(RunState(status="running"))
    with pytest.raises(CnnlabError, match=r"not supported with several processes.*--overwrite"):
        _decide(config, run, team)
    assert _decide(config, run, team, overwrite=True) == plan  # starts over
    assert not run.dir.exists()


def test_a_process_other_than_0_gets_a_read_only_run(tmp_path: Path) -> None:
    from cnnlab.runs import RunState

    follower = Processes(1, 2, ("cpu:0", "cpu:1")).open_run(tmp_path / "run")
    assert follower.read_only and not Processes().open_run(tmp_path / "run").read_only
    follower.make_dir()
    follower.write_state(RunState(status="running"))
    follower.write_metrics({"test_accuracy": 1.0})
    follower.check_writable()
    assert not (tmp_path / "run").exists()
    assert follower.state().status == "new"  # reads work as for any Run


def test_launch_gives_its_processes_the_chosen_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each child exits 0 only if it runs with KERAS_BACKEND=jax, which nothing else sets.
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    check = "import os, sys; sys.exit(0 if os.environ['KERAS_BACKEND'] == 'jax' else 3)"
    assert launch([], 2, backend="jax", program=[sys.executable, "-c", check], env=env) == 0
    with pytest.raises(CnnlabError, match="tensorflow backend"):
        launch([], 2, backend="tensorflow", program=[sys.executable, "-c", check], env=env)

    # `cnnlab train --backend jax --processes 2` passes the flag's backend to launch.
    launched: list[tuple[list[str], str]] = []
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(
        "cnnlab.training.distributed.launch",
        lambda argv, count, backend: launched.append((argv, backend)) or 0,
    )
    assert main(["train", "--backend", "jax", "--processes", "2", "--epochs", "1"]) == 0
    assert launched == [(["train", "--backend", "jax", "--epochs", "1"], "jax")]
