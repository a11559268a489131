"""The learning-rate range test (`cnnlab lr-find`): the rates it tries, what it suggests, and
that it leaves the model and the runs folder as they were."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.config import Config
from cnnlab.errors import ConfigError
from cnnlab.training.lr_find import exponential_rates, lr_find, range_test

STEPS = 24  # 4 epochs of the tiny data's 6 batches: enough to see the loss fall, and quick


@pytest.fixture()
def config(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> Config:
    return tiny_config(tmp_path / "runs", tiny_npz, tiny_arch, batch_size=32)


def test_the_rates_rise_exponentially_from_start_to_end() -> None:
    rates = exponential_rates(1e-7, 10.0, 100)
    assert len(rates) == 100
    assert rates[0] == pytest.approx(1e-7) and rates[-1] == pytest.approx(10.0)
    ratios = np.diff(np.log(rates))
    assert np.allclose(ratios, ratios[0]) and ratios[0] > 0  # the same factor every step


@pytest.mark.parametrize(("start", "end", "steps"), [(1e-3, 1e-4, 10), (0.0, 1.0, 10), (1, 2, 1)])
def test_a_range_that_does_not_rise_is_refused(start: float, end: float, steps: int) -> None:
    with pytest.raises(ConfigError):
        exponential_rates(start, end, steps)


def test_the_test_suggests_a_rate_in_range_below_divergence_and_writes_nothing(
    config: Config,
) -> None:
    result = lr_find(config, steps=STEPS, start_lr=1e-5, end_lr=1.0)
    assert result.rates == pytest.approx(exponential_rates(1e-5, 1.0, STEPS)[: len(result.rates)])
    assert len(result.losses) == len(result.smoothed) == len(result.rates)
    assert 1e-5 <= result.suggestion <= 1.0
    assert result.suggestion == pytest.approx(max(1e-5, result.minimum_rate / 10))
    if result.stopped_early:
        assert result.suggestion < result.rates[-1]  # below the rate that diverged
    assert not Path(config.run.runs_dir).exists()  # no run folder, not even the runs folder


def test_the_smoothed_loss_is_fastais_debiased_moving_average(config: Config) -> None:
    result = lr_find(config, steps=8, start_lr=1e-4, end_lr=1e-2)
    average, expected = 0.0, []
    for step, loss in enumerate(result.losses, start=1):
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98**step))
    assert result.smoothed == pytest.approx(expected)
    assert not result.stopped_early and len(result.losses) == 8


def test_each_recorded_loss_is_its_steps_own_at_its_own_rate() -> None:
    """y = w x with x = 1, y = 0 and plain SGD: the loss is w^2 and each step multiplies w by
    (1 - 2 rate), so every step's loss is known; Keras' logs would give the epoch's mean."""
    from cnnlab._backend import keras as _keras
    from cnnlab.training.lr_find import LrFinder

    keras = _keras()
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")]
    )
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=1)
    rates = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
    finder = LrFinder(rates)
    x, y = np.ones((8, 1), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=3, shuffle=False, callbacks=[finder], verbose=0)
    w, expected = 1.0, []
    for rate in rates:
        expected.append(w * w)
        w *= 1 - 2 * rate
    assert finder.losses == pytest.approx(expected, rel=1e-5)
    assert not finder.stopped_early


def test_a_huge_end_rate_diverges_and_stops_early(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, tiny_config: Callable[..., Config]
) -> None:
    """On shuffled labels (the tiny data itself is learned to a loss of 0, whose gradient
    is 0, so that no rate makes it diverge) the loss blows up as the rate reaches ~1e2."""
    with np.load(tiny_npz) as saved:
        arrays = dict(saved)
    arrays["y_train"] = np.random.default_rng(1).permutation(arrays["y_train"])
    np.savez(tmp_path / "noisy.npz", **arrays)
    config = tiny_config(tmp_path / "runs", tmp_path / "noisy.npz", tiny_arch)
    result = lr_find(config, steps=40, start_lr=1e-4, end_lr=1e8)
    assert result.stopped_early
    assert len(result.rates) < 40
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * min(result.smoothed[:-1])
    before = result.smoothed[:-1]  # it stopped at the first step that diverged
    assert all(value <= 4 * min(before[: k + 1]) for k, value in enumerate(before))
    assert 1e-4 <= result.suggestion < result.rates[-1]
    assert not (tmp_path / "runs").exists()


ARCH_WITH_STATE = """
name = "stateful"
[[layers]]
type = "Conv2D"
filters = 4
kernel_size = [3, 3]
activation = "relu"
[[layers]]
type = "BatchNormalization"
[[layers]]
type = "MaxPool2D"
pool_size = [2, 2]
[[layers]]
type = "Flatten"
[[layers]]
type = "Dropout"
rate = 0.3
[[layers]]
type = "Dense"
units = "num_classes"
activation = "softmax"
"""


@pytest.mark.parametrize("arch", ["tiny", "with batch norm and dropout"])
def test_the_models_variables_are_put_back_bit_for_bit(
    arch: str, tmp_path: Path, config: Config
) -> None:
    """Every variable of the model (batch norm's moving statistics and dropout's random
    generator included) and of its optimizer is as it was before the test, bit for bit."""
    from cnnlab._backend import keras
    from cnnlab.data.feed import load_feed
    from cnnlab.training.trainer import build_training_model, resolve_defaults

    if arch != "tiny":
        spec = tmp_path / "stateful.toml"
        spec.write_text(ARCH_WITH_STATE)
        config = config.replace(model={"architecture": str(spec)})
    config = resolve_defaults(config).replace(train={"steps_per_execution": 1})
    feed = load_feed(config)
    model = build_training_model(config, feed)
    model.optimizer.build(model.trainable_variables)

    def snapshot() -> list[np.ndarray]:
        variables = (*model.variables, *model.optimizer.variables)
        return [keras().ops.convert_to_numpy(v) for v in variables]

    before = snapshot()
    data = feed.batches("train", 32, shuffle=True, seed=1)
    result = range_test(model, data, exponential_rates(1e-4, 1.0, 12), epochs=2)
    assert len(result.losses) == 12 and len(set(result.losses)) > 1  # it did train
    after = snapshot()
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        assert old.dtype == new.dtype and old.shape == new.shape
        assert old.tobytes() == new.tobytes()
    rate = keras().ops.convert_to_numpy(model.optimizer.learning_rate)
    assert float(rate) == pytest.approx(0.01)


def test_a_run_it_starts_from_is_left_untouched(
    tmp_path: Path,
    tiny_run: Path,
    tiny_npz: Path,
    tiny_arch: Path,
    tiny_config: Callable[..., Config],
) -> None:
    model_file = tiny_run / "model.keras"
    files = sorted(p for p in tiny_run.rglob("*") if p.is_file())
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    config = tiny_config(tmp_path / "runs", tiny_npz, tiny_arch).replace(
        model={"init": str(tiny_run)}
    )
    result = lr_find(config, steps=6, start_lr=1e-4, end_lr=1e-2)
    assert len(result.losses) == 6
    assert model_file.is_file()
    assert sorted(p for p in tiny_run.rglob("*") if p.is_file()) == files
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == digests
    assert not (tmp_path / "runs").exists()


def test_the_command_plots_the_curve_and_ends_with_the_suggestion(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "curve.png"
    runs = tmp_path / "runs"
    code = main(
        [
            "lr-find",
            "--dataset",
            str(tiny_npz),
            "--model",
            str(tiny_arch),
            "--init-filters",
            "random",
            "--validation-split",
            "0.25",
            "--seed",
            "7",
            "--runs-dir",
            str(runs),
            "--steps",
            "12",
            "--start-lr",
            "1e-5",
            "--end-lr",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"suggested learning rate: [0-9.e+-]+", lines[-1]), lines
    assert 1e-5 <= float(lines[-1].split(": ")[1]) <= 1
    assert out.read_bytes().startswith(b"\x89PNG")
    assert not runs.exists()
