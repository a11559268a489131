from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnlab.config import Config, load_config
from cnnlab.errors import ConfigError, RunError
from cnnlab.runs import Run
from cnnlab.training.trainer import train


def test_a_run_folder_has_everything(tiny_run: Path) -> None:
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.toml", "run.json", "summary.txt", "model.keras", "history.csv"} <= names
    assert "backup" not in names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    state = Run(tiny_run).state()
    assert state.status == "finished"
    assert state.class_names == ["top", "bottom", "left", "right"]
    assert state.input_shape == [28, 28, 1]
    history = Run(tiny_run).history()
    assert [int(r["epoch"]) for r in history] == list(range(state.epochs_run))
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "epoch_seconds"} <= set(history[0])
    # The saved model is the best epoch's: its validation accuracy is the best in the history.
    best = max(r["val_accuracy"] for r in history)
    assert state.best_metrics["val_accuracy"] == best
    assert best >= 0.9  # the tiny classes are easy: the pipeline really learns


def test_config_toml_re_runs_exactly(tiny_run: Path) -> None:
    from cnnlab._backend import auto_precision

    config = load_config(tiny_run / "config.toml")
    assert config.train.seed == 7 and config.train.epochs == 4
    assert config.train.precision == auto_precision()[0]  # "auto", resolved and recorded
    assert config.train.backend == "tensorflow" and config.train.steps_per_execution == 16
    state = Run(tiny_run).state()
    assert state.backend == "tensorflow" and state.cpu and state.cpu["model"]
    assert state.precision and state.precision["policy"] == config.train.precision
    assert config.run_dir == tiny_run


def test_finished_run_is_not_retrained(tiny_run: Path) -> None:
    config = load_config(tiny_run / "config.toml")
    before = (tiny_run / "model.keras").stat().st_mtime_ns
    result = train(config)
    assert (tiny_run / "model.keras").stat().st_mtime_ns == before
    assert result.state.status == "finished"


def test_same_seed_same_run(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    first = train(tiny_config(tmp_path / "a", tiny_npz, tiny_arch, epochs=2))
    second = train(tiny_config(tmp_path / "b", tiny_npz, tiny_arch, epochs=2))
    for row_a, row_b in zip(first.history, second.history, strict=True):
        # Same process, same kernels, same seed: a determinism check, not a cross-CPU one
        # (rel 1e-5 allows for a threaded reduction's order, nothing more).
        assert row_a["loss"] == pytest.approx(row_b["loss"], rel=1e-5)
        assert row_a["val_accuracy"] == row_b["val_accuracy"]


def test_drawn_seed_is_recorded(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    result = train(tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=1, seed=-1))
    assert load_config(result.run_dir / "config.toml").train.seed >= 0


def test_target_accuracy_stops_early(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    result = train(
        tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=30, target_accuracy=0.5, patience=0)
    )
    history = result.history
    assert len(history) < 30
    assert history[-1]["val_accuracy"] >= 0.5
    assert all(r["val_accuracy"] < 0.5 for r in history[:-1])


def test_early_stopping_restores_the_best(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    result = train(tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=40, patience=1))
    history = result.history
    assert len(history) < 40
    # Best validation accuracy; between equal accuracies, the lower validation loss.
    best = max(
        range(len(history)),
        key=lambda i: (history[i]["val_accuracy"], -history[i]["val_loss"]),
    )
    assert result.state.best_epoch == best + 1
    splits_val = result.state.validation_images
    assert splits_val == 60


def test_a_changed_config_does_not_resume(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    config = tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=1)
    run_dir = train(config).run_dir
    state = Run(run_dir).state()
    state.status = "running"  # as if it had been interrupted
    Run(run_dir).write_state(state)
    with pytest.raises(RunError, match="different configuration"):
        train(config.replace(train={"learning_rate": 0.5}))


def test_overwrite_starts_over(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    config = tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=1)
    train(config)
    result = train(config.replace(train={"epochs": 2}), overwrite=True)
    assert len(result.history) == 2


KILLER = """
import os, signal, sys
import keras
import cnnlab.training.trainer as training
from cnnlab.config import Config, load_config

class KillAfter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == {kill_epoch}:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up: a real crash

original = training.make_callbacks
def with_killer(*args, **kwargs):
    callbacks, checkpoint = original(*args, **kwargs)
    return callbacks + [KillAfter()], checkpoint
training.make_callbacks = with_killer
training.train(load_config(sys.argv[1]))
"""


def test_killed_run_resumes_where_it_stopped(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    config = tiny_config(tmp_path / "runs", tiny_npz, tiny_arch, epochs=5, patience=0)
    config_file = tmp_path / "run.toml"
    config_file.write_text(config.to_toml())
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER.format(kill_epoch=2)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    killed = subprocess.run(
        [sys.executable, str(script), str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = config.run_dir
    assert Run(run_dir).state().status == "running"
    assert (run_dir / "backup").is_dir()
    assert len(Run(run_dir).history()) == 3  # epochs 0, 1, 2 finished before the kill

    resumed = train(config)  # the same command again
    history = resumed.history
    assert [int(r["epoch"]) for r in history] == [0, 1, 2, 3, 4]
    assert resumed.state.status == "finished"
    assert not (run_dir / "backup").exists()
    # Epochs 3 and 4 continued from the backed-up weights: no restart from scratch, so the
    # training loss after the resume is below the first epoch's.
    assert history[3]["loss"] < history[0]["loss"]
    probabilities = resumed.model.predict(np.zeros((1, 28, 28, 1)), verbose=0)
    assert probabilities.shape == (1, 4)


def test_a_diverging_run_ends_in_a_clear_error(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    config = tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=2, learning_rate=1e30)
    with pytest.raises(RunError, match="loss became NaN"):
        train(config)
    assert Run(config.run_dir).state().status == "running"  # not marked finished


@pytest.mark.parametrize(
    ("gpu", "cpu_flags", "expected"),
    [
        ((9, 0), "", "mixed_bfloat16"),  # Hopper: bfloat16 tensor cores, no loss scaling
        ((8, 0), "", "mixed_bfloat16"),  # Ampere
        ((7, 5), "", "mixed_float16"),  # Turing: float16 tensor cores only
        (None, "fpu sse avx512_bf16", "mixed_bfloat16"),
        (None, "fpu sse amx_bf16", "mixed_bfloat16"),
        (None, "fpu sse avx2", "float32"),
    ],
)
def test_fastest_precision_follows_the_hardware(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    gpu: tuple[int, int] | None,
    cpu_flags: str,
    expected: str,
) -> None:
    import builtins

    from cnnlab import _backend

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor : 0\nflags : {cpu_flags}\n")
    real_open = builtins.open
    monkeypatch.setattr(_backend, "_gpu_compute_capability", lambda backend: gpu)
    monkeypatch.setattr(
        builtins,
        "open",
        lambda f, *a, **k: real_open(cpuinfo if f == "/proc/cpuinfo" else f, *a, **k),
    )
    assert _backend.fastest_precision() == expected


def test_a_run_without_validation_records_every_epoch(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    """The seed recipe holds nothing out; Keras' CSVLogger then writes "NA" in its val_
    columns, and those rows must still count (they once read as half-written lines)."""
    config = tiny_config(tmp_path, tiny_npz, tiny_arch, epochs=2, recipe="seed")
    config = config.replace(data={"validation_split": 0.0})
    result = train(config)
    assert result.state.epochs_run == 2
    assert [int(row["epoch"]) for row in result.history] == [0, 1]
    assert not any(key.startswith("val_") for key in result.history[0])
    assert result.state.best_epoch == 2  # the seed recipe keeps the last epoch's model


PUBLIC_NAMES_THEN_JAX = """
import sys

import cnnlab
from cnnlab.config import load_config

for name in cnnlab.__all__:
    getattr(cnnlab, name)
assert "keras" not in sys.modules, "importing cnnlab's public names imported Keras"
dataset, arch, runs = sys.argv[1:]
config = load_config(overrides={
    "data.dataset": dataset, "data.validation_split": 0.25, "model.architecture": arch,
    "model.init_filters": "random", "train.epochs": 1, "train.seed": 7,
    "train.backend": "jax", "run.runs_dir": runs, "run.name": "tiny",
})
result = cnnlab.train(config)
stop = cnnlab.TargetReached(monitor="loss")  # made after Keras started: a Keras callback
assert isinstance(stop, sys.modules["keras"].callbacks.Callback)
print("trained on", result.state.backend)
"""


def test_every_public_name_imports_and_then_trains_on_jax(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path
) -> None:
    """Importing cnnlab's public names (the callbacks among them) imports no Keras, so a
    later train() can still choose the JAX backend in the same process."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    args = [str(tiny_npz), str(tiny_arch), str(tmp_path / "runs")]
    done = subprocess.run(
        [sys.executable, "-c", PUBLIC_NAMES_THEN_JAX, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained on jax" in done.stdout
    assert Run(tmp_path / "runs" / "tiny").state().backend == "jax"


def test_a_folder_of_colour_pictures_trains_streamed_and_evaluates(tmp_path: Path) -> None:
    """Issue 27: class folders of mixed sizes, modes and formats, one file that is not an image
    and one PNG cut short, through train and evaluate; the recipe and the skipped files are
    recorded, the class names travel, and a second call finds the run finished."""
    import io

    from PIL import Image
    from signs import make_signs

    from cnnlab.evaluation import evaluate

    root = tmp_path / "signs"
    make_signs(root, count=64, seed=2)
    (root / "red_cross" / "notes.jpg").write_text("not a picture")
    encoded = io.BytesIO()
    Image.new("RGB", (60, 60), (200, 0, 0)).save(encoded, format="PNG")
    (root / "red_square" / "cut.png").write_bytes(encoded.getvalue()[:-40])  # truncated pixels
    config = load_config(
        overrides={
            "data.dataset": str(root),
            "train.epochs": 1,
            "train.seed": 3,
            "run.runs_dir": str(tmp_path / "runs"),
        }
    )
    result = train(config)
    state, run = result.state, Run(result.run_dir)
    side = state.input_shape[0]
    assert state.input_shape == [side, side, 3] and side % 8 == 0
    assert state.input_recipe == {"size": [side, side], "color": "rgb", "resize": "squash"}
    assert run.config().data.image_size == f"{side}x{side}"  # auto, resolved and recorded
    assert run.config().data.color == "rgb" and run.config().train.recipe == "photos"
    assert state.class_names == sorted(p.name for p in root.iterdir() if p.is_dir())
    feed = run.data()
    cut_in_test = "cut.png" in {p.name for p in feed.dataset.test.paths}
    skipped = {Path(p).name for p in state.unreadable_images}
    # notes.jpg is found by its header; cut.png only when decoded (by training, unless it is
    # a test picture, which evaluation skips)
    assert skipped == ({"notes.jpg"} if cut_in_test else {"notes.jpg", "cut.png"})
    assert state.train_images + state.validation_images + feed.count("test") == 65
    metrics = evaluate(run.dir)
    assert [row["class"] for row in metrics["per_class"]] == state.class_names
    assert metrics["test_images"] == feed.count("test") - cut_in_test
    again = train(config)  # auto settings again: the same run, already finished
    assert again.state.epochs_run == state.epochs_run == 1


def test_class_weight_auto_weighs_an_imbalanced_folder(tmp_path: Path) -> None:
    """`--class-weight auto` records inverse-frequency weights from the training split."""
    from signs import make_signs

    root = tmp_path / "signs"
    make_signs(root, count=64, seed=5)
    for extra in sorted((root / "red_cross").iterdir())[2:]:
        extra.unlink()  # 2 red crosses against about 8 of every other class
    config = load_config(
        overrides={
            "data.dataset": str(root),
            "data.image_size": "16",
            "train.epochs": 1,
            "train.seed": 3,
            "train.class_weight": "auto",
            "run.runs_dir": str(tmp_path / "runs"),
        }
    )
    state = train(config).state
    counts = Run(tmp_path / "runs" / "photo_cnn-signs").data().class_counts("train")
    expected = counts.sum() / (len(counts) * counts.astype(float))
    np.testing.assert_allclose(state.class_weights, expected, rtol=1e-5)
    minority = state.class_names.index("red_cross")
    assert counts[minority] < counts.min(initial=99, where=np.arange(8) != minority)
    assert state.class_weights[minority] == max(state.class_weights)


def _two_class_npz(path: Path) -> Path:
    """Vertical vs horizontal bars: the tiny pictures, relabelled into two new classes."""
    from synthetic import make_images

    rng = np.random.default_rng(11)
    bars_train, bars_test = np.tile(np.arange(4), 15), np.tile(np.arange(4), 5)
    np.savez(
        path,
        x_train=make_images(bars_train, rng),
        y_train=(bars_train >= 2).astype(np.int64),
        x_test=make_images(bars_test, rng),
        y_test=(bars_test >= 2).astype(np.int64),
        class_names=np.array(["horizontal", "vertical"]),
    )
    return path


def _fine_tune(tmp_path: Path, source: Path, name: str, **model: object) -> Any:
    overrides = {
        "data.dataset": str(_two_class_npz(tmp_path / "bars.npz")),
        "data.validation_split": 0.25,
        "model.init": str(source),
        "train.seed": 2,
        "train.lr_decay": 1.0,
        "train.learning_rate": 0.01,
        "run.runs_dir": str(tmp_path / "runs"),
        "run.name": name,
    }
    overrides.update({k if "." in k else f"model.{k}": v for k, v in model.items()})
    return train(load_config(overrides=overrides))


def test_fine_tuning_replaces_the_head_and_keeps_frozen_layers_bit_for_bit(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Issue 28: a 2-class head on the tiny 4-class run; while the head trains alone, every
    other weight stays exactly the source's; the run records where it started."""
    from cnnlab.runs import load_model

    source = load_model(tiny_run)
    result = _fine_tune(tmp_path, tiny_run, "head", head_epochs=3, **{"train.epochs": 3})
    tuned = result.model
    assert tuned.output_shape[-1] == 2 and tuned.layers[-1].name == "head"
    assert result.state.class_names == ["horizontal", "vertical"]
    for before, after in zip(source.layers[:-1], tuned.layers[:-1], strict=True):
        for old, new in zip(before.get_weights(), after.get_weights(), strict=True):
            assert np.array_equal(old, new), before.name  # frozen: bit for bit
    started = result.state.started_from
    assert started["run"] == str(tiny_run.resolve()) and started["head_epochs"] == 3
    assert started["class_names"] == ["top", "bottom", "left", "right"]


def test_fine_tuning_then_trains_every_layer_at_a_lower_rate(
    tiny_run: Path, tmp_path: Path
) -> None:
    from cnnlab.runs import load_model

    source = load_model(tiny_run)
    result = _fine_tune(
        tmp_path, tiny_run, "whole", head_epochs=1, **{"train.epochs": 3, "train.lr_decay": 0.9}
    )
    conv_before = source.layers[0].get_weights()[0]
    conv_after = result.model.layers[0].get_weights()[0]
    assert not np.array_equal(conv_before, conv_after)  # unfrozen in the second phase
    rates = [row["learning_rate"] for row in result.history]  # the schedule, then a tenth
    assert rates == pytest.approx([0.01, 0.01 * 0.9 * 0.1, 0.01 * 0.81 * 0.1], rel=1e-3)
    assert result.state.best_metrics["val_accuracy"] >= 0.9  # bars' direction is easy


def test_fine_tuning_refuses_what_cannot_fit(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such layer; choose one of"):
        _fine_tune(tmp_path, tiny_run, "bad-layer", freeze_until="nope", **{"train.epochs": 1})
    from signs import make_signs

    make_signs(tmp_path / "signs", count=16, seed=1)
    config = load_config(
        overrides={
            "data.dataset": str(tmp_path / "signs"),
            "data.image_size": "16",
            "model.init": str(tiny_run),
            "train.epochs": 1,
            "train.seed": 1,
            "run.runs_dir": str(tmp_path / "runs"),
        }
    )
    with pytest.raises(ConfigError, match="takes 28x28 grayscale pictures but this data gives"):
        train(config)
