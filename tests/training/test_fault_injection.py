"""Killed at any moment, a seeded run resumes and ends exactly as an uninterrupted one.

The trainer runs in a subprocess that SIGKILLs itself (no clean-up, as a crash or an OOM kill)
at a chosen moment: in the middle of an epoch, while the best-model checkpoint is being
renamed into place, while the training state is being saved, and during the final save after
`fit`. The same command then runs again, and again, until it finishes. The history (every
metric of every epoch) and the final weights must equal an uninterrupted run's exactly (the
CPU TensorFlow backend computes the same operations in the same order), and no file in the run
folder may ever be half-written.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from boards import board_mismatches, read_board

from cnnlab.config import Config
from cnnlab.runs import Run
from cnnlab.training.trainer import train

SRC = Path(__file__).resolve().parents[2] / "src"

KILLER = """
import os, signal, sys
import keras
import cnnlab.training.trainer as training
from cnnlab import _io, runs
from cnnlab.config import load_config

where, epoch, batch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class Killer(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None):
        self.epoch = e
    def on_train_batch_end(self, b, logs=None):
        if where == "mid-epoch" and self.epoch == epoch and b >= batch:
            die()

real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    # die after the temporary file is complete, just before it would take the name
    name = os.path.basename(str(dst))
    if where == "checkpoint" and name == "model.keras" and Killer.epoch_now >= epoch:
        die()
    if where == "state" and name == "state.npz" and Killer.epoch_now >= epoch:
        die()
    return real_replace(src, dst, *args, **kwargs)
Killer.epoch_now = 0
_io.os.replace = replace

class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None):
        Killer.epoch_now = e

if where == "final":
    real_write = runs.Run.write_history
    def write_history(self, history):
        die()
    runs.Run.write_history = write_history

original = training.make_callbacks
def with_killer(*args, **kwargs):
    callbacks, checkpoint = original(*args, **kwargs)
    return [Clock(), *callbacks, Killer()], checkpoint
training.make_callbacks = with_killer
training.train(load_config(sys.argv[1]))
print("finished without being killed")
"""


def _kills(seed: int) -> list[tuple[str, int, int]]:
    """Where to die, in order: two random moments inside epochs (epoch 0-4, batch 0-11 of 12),
    a checkpoint and a state save being renamed into place at a random epoch, and the final
    save. Seeded, so a failure names a plan that can be replayed (CNNLAB_FAULT_SEED)."""
    rng = np.random.default_rng(seed)
    first, second = sorted(int(e) for e in rng.choice(5, size=2, replace=False))
    return [
        ("mid-epoch", first, int(rng.integers(0, 12))),
        ("checkpoint", int(rng.integers(first, 5)), 0),
        ("state", int(rng.integers(first, 5)), 0),
        ("mid-epoch", second, int(rng.integers(0, 12))),
        ("final", 0, 0),
    ]


FAULT_SEED = int(os.environ.get("CNNLAB_FAULT_SEED", "0"))


def _metrics(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Every recorded value but the wall-clock time, which no two runs share."""
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


def _no_half_files(run_dir: Path) -> None:
    """Every file in the run folder has its final name or is a temporary that a later start
    removes; the named ones are complete (they load)."""
    run = Run(run_dir)
    if run.state_file.exists():
        run.state()  # parses
    if run.config_file.exists():
        run.config()
    if run.model_file.exists():
        run.load_model()
    if run.state_backup.exists():
        with np.load(run.state_backup) as saved:
            assert int(saved["epoch"]) >= 1


@pytest.mark.integration
def test_a_run_killed_again_and_again_ends_as_an_uninterrupted_one(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    # val_loss keeps falling on the tiny data, so early stopping (patience 2) stays armed
    # without firing; its counters and best weights still have to survive every kill.
    settings = {
        "epochs": 6,
        "patience": 2,
        "monitor": "val_loss",
        "lr_decay": 0.7,
        "batch_size": 16,
    }
    reference = train(tiny_config(tmp_path / "reference", tiny_npz, tiny_arch, **settings))

    config = tiny_config(tmp_path / "killed", tiny_npz, tiny_arch, **settings)
    config = config.replace(log={"tensorboard_histograms": True})  # pruned on resume too
    config_file = tmp_path / "run.toml"
    config_file.write_text(config.to_toml())
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    kills = 0
    plan = _kills(FAULT_SEED)
    for where, epoch, batch in plan:
        if Run(config.run_dir).state().finished:
            break
        done = subprocess.run(
            [sys.executable, str(script), str(config_file), where, str(epoch), str(batch)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode in (-9, 0), f"plan {plan}: {done.stderr[-3000:]}"
        kills += done.returncode == -9
        _no_half_files(config.run_dir)
    assert kills >= 3, plan  # the run really was interrupted, several times

    resumed = train(config)  # the same command once more, to the end
    assert resumed.state.finished
    assert _metrics(resumed.history) == _metrics(reference.history)
    assert resumed.state.best_epoch == reference.state.best_epoch
    for mine, theirs in zip(
        resumed.model.get_weights(), reference.model.get_weights(), strict=True
    ):
        assert np.array_equal(mine, theirs)
    assert not [p.name for p in config.run_dir.iterdir() if p.name.startswith(".")]
    assert not math.isnan(resumed.history[-1]["loss"])
    # TensorBoard: every epoch once, although kills fell between its write and the backup's.
    assert board_mismatches(config.run_dir) == []
    train_board = read_board(config.run_dir / "logs", "train")
    histograms = [points for tag, points in train_board.items() if tag.endswith("/histogram")]
    epochs = list(range(len(resumed.history)))
    assert histograms and all([step for step, _ in h] == epochs for h in histograms)


def test_a_run_folder_that_cannot_be_written_fails_before_training(
    tmp_path: Path,
    tiny_npz: Path,
    tiny_arch: Path,
    tiny_config: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Root ignores permission bits, so a read-only file system is simulated at the write."""
    import errno
    import tempfile

    from cnnlab.errors import RunError

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # what atomic writes create
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # what the early check creates
    config = tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=1)
    with pytest.raises(RunError, match=r"cannot write the run folder \(Read-only file system\)"):
        train(config)
    assert not Run(config.run_dir).model_file.exists()


def test_a_full_disk_mid_run_keeps_the_previous_best_model(
    tmp_path: Path,
    tiny_npz: Path,
    tiny_arch: Path,
    tiny_config: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills while epoch 2's checkpoint is written: the error propagates (the CLI
    prints it in one line), and epoch 1's model.keras is still whole and loadable."""
    import errno

    from cnnlab import _io

    config = tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=3, monitor="val_loss")
    real_replace = _io.os.replace
    saves: list[str] = []

    def full_after_first(src: str, dst: str) -> None:
        if str(dst).endswith("model.keras"):
            saves.append(str(dst))
            if len(saves) > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(_io.os, "replace", full_after_first)
    with pytest.raises(OSError, match="No space left"):
        train(config)
    monkeypatch.undo()
    run = Run(config.run_dir)
    model = run.load_model()  # the first epoch's, whole
    assert model.count_params() > 0
    assert not [p.name for p in run.dir.iterdir() if p.name.startswith(".")]  # no temp left
