"""Presets and their architectures: build, train a step, round-trip; schedules; resolution."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.config import TrainConfig, load_config, presets
from cnnlab.errors import ConfigError
from cnnlab.model.builder import build_model, builtin_architectures
from cnnlab.runs import load_model
from cnnlab.training.trainer import learning_rate_schedule


@pytest.mark.parametrize("name", builtin_architectures())
def test_preset_trains_one_step_and_round_trips(name: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(name, (28, 28, 1), 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((8, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 8)
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, y)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_augmentation_keeps_range_and_is_off_at_inference() -> None:
    model = build_model("improved", (28, 28, 1), 10)
    augment = [layer for layer in model.layers if type(layer).__name__.startswith("Random")]
    assert [type(layer).__name__ for layer in augment] == [
        "RandomHorizontalFlip",
        "RandomShift",
        "RandomErasingMask",
    ]
    x = np.random.default_rng(1).random((16, 28, 28, 1)).astype("float32")
    trained = x
    for layer in augment:
        trained = layer(trained, training=True)
    trained = np.asarray(trained)
    assert trained.shape == x.shape  # one output per image: labels stay paired
    assert trained.min() >= 0.0 and trained.max() <= 1.0
    assert not np.allclose(trained, x)  # it does change the images while training
    for layer in augment:
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_resnet_has_residual_connections_that_match_in_shape() -> None:
    model = build_model("resnet", (28, 28, 1), 10)
    adds = [layer for layer in model.layers if type(layer).__name__ == "Add"]
    assert len(adds) == 6  # three stages of two basic blocks
    for add in adds:
        left, right = (tuple(t.shape) for t in add.input)
        assert left == right
    # The stages work at 28x28, 14x14 and 7x7, as the file's comment says.
    assert sorted({tuple(add.output.shape)[1:3] for add in adds}) == [(7, 7), (14, 14), (28, 28)]
    # A strided 1x1 projection where a stage halves the size; identity shortcuts elsewhere.
    projections = [layer for layer in model.layers if layer.name.endswith("_proj")]
    assert [p.kernel_size for p in projections] == [(1, 1), (1, 1)]
    assert model.count_params() == 698_282


@pytest.mark.parametrize("name", presets())
def test_every_preset_resolves_to_a_config_that_builds(name: str) -> None:
    config = load_config(preset=name)
    assert Path(config.model.architecture).stem in builtin_architectures()
    model = build_model(config.model.architecture, (28, 28, 1), 10)
    assert tuple(model(np.zeros((1, 28, 28, 1), "float32")).shape) == (1, 10)
    assert learning_rate_schedule(config.train) is not None or config.train.lr_decay == 1


def test_preset_is_overridden_by_config_file_then_flags(tmp_path: Path) -> None:
    assert presets() == ["fcn", "improved", "resnet"]
    base = load_config(preset="resnet")
    assert (base.model.architecture, base.train.epochs, base.train.lr_schedule) == (
        "resnet",
        28,
        "cosine",
    )
    assert base.train.patience == 0  # the schedule, not early stopping, sets the length
    file = tmp_path / "run.toml"
    file.write_text("[train]\nepochs = 4\nbatch_size = 64\n")
    config = load_config(file, preset="resnet", overrides={"train.epochs": 2})
    assert (config.train.epochs, config.train.batch_size) == (2, 64)
    assert config.train.learning_rate == base.train.learning_rate  # still the preset's
    assert config.model.architecture == "resnet"


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'resnett'.*fcn, improved, resnet"):
        load_config(preset="resnett")


def test_cosine_schedule_warms_up_then_decays_to_near_zero() -> None:
    train = TrainConfig(epochs=10, learning_rate=0.004, lr_schedule="cosine", warmup_epochs=1)
    schedule = learning_rate_schedule(train)
    assert schedule is not None
    rates = [schedule(epoch) for epoch in range(10)]
    assert rates[0] == pytest.approx(0.002)  # half way up during the one warm-up epoch
    assert rates[1] == pytest.approx(0.004)  # the peak right after warm-up
    assert all(a > b for a, b in itertools.pairwise(rates[1:]))  # then only down
    assert 0 < rates[-1] < 0.0002
    # Half way through the decay the rate is half the peak.
    assert learning_rate_schedule(TrainConfig(epochs=5, learning_rate=1.0, lr_schedule="cosine"))(  # type: ignore[misc]
        2
    ) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 5)))


def test_exponential_and_constant_schedules() -> None:
    schedule = learning_rate_schedule(TrainConfig(learning_rate=0.01, lr_decay=0.5))
    assert schedule is not None
    assert [schedule(e) for e in range(3)] == pytest.approx([0.01, 0.005, 0.0025])
    assert learning_rate_schedule(TrainConfig(lr_decay=1.0)) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr_schedule": "linear"}, "lr_schedule must be one of exponential, cosine"),
        ({"epochs": 3, "warmup_epochs": 3}, "warmup_epochs must be >= 0 and fewer than"),
        ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
    ],
)
def test_bad_schedule_settings(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_array_batches_cover_every_image_once_and_reshuffle() -> None:
    from cnnlab.data.pipeline import _array_batches

    x = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    y = np.arange(10)
    batches = _array_batches(x, y, 4, shuffle=True, seed=3)
    assert len(batches) == 3
    first = [batches[i] for i in range(len(batches))]
    assert [len(b[1]) for b in first] == [4, 4, 2]
    seen = np.concatenate([b[1] for b in first])
    assert sorted(seen) == list(range(10))  # every image exactly once
    for images, labels in first:
        np.testing.assert_array_equal(images.ravel(), labels)  # pairs stay together
    batches.on_epoch_end()
    again = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(again) == list(range(10)) and not np.array_equal(again, seen)
    ordered = _array_batches(x, y, 4)
    np.testing.assert_array_equal(np.concatenate([ordered[i][1] for i in range(3)]), y)
