from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.config import Config, load_config, recipe
from cnnlab.errors import ConfigError


def test_seed_recipe_is_the_notes() -> None:
    config = recipe("seed")
    train = config.train
    assert (train.epochs, train.batch_size, train.optimizer) == (50, 32, "adam")
    assert config.data.validation_split == 0.0  # all 60,000 training images
    assert config.train.patience == 0 and config.train.target_accuracy == 0.0
    assert config.run_name == "basic_cnn-fashion_mnist-seed"


def test_default_recipe_uses_early_stopping() -> None:
    config = recipe("default")
    assert config.train.patience > 0 and config.train.batch_size == 32
    assert 0 < config.data.validation_split < 1
    assert config.run_name == "basic_cnn-fashion_mnist"


def test_file_then_command_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[train]\nepochs = 7\nlearning_rate = 1\n[data]\nlimit = 100\n")
    config = load_config(path, overrides={"train.epochs": 9, "train.seed": None})
    assert config.train.epochs == 9  # the flag beats the file
    assert config.train.learning_rate == 1.0  # an int is accepted for a float
    assert config.data.limit == 100  # the file beats the default
    assert config.train.seed == -1  # a None override is "not given"


def test_recipe_from_file_then_flag(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[train]\nrecipe = "seed"\n')
    assert load_config(path).train.epochs == 50
    assert load_config(path, recipe_name="default").train.epochs == recipe("default").train.epochs


def test_round_trip_through_toml(tmp_path: Path) -> None:
    config = load_config(overrides={"train.seed": 3, "data.dataset": "mnist"})
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepochs = 0\n", "train.epochs must be >= 1"),
        ("[train]\nepoch = 3\n", "unknown setting train.epoch"),
        ("[trian]\nepochs = 3\n", "unknown section [trian]"),
        ('[train]\nepochs = "ten"\n', "train.epochs must be int"),
        ("[data]\nvalidation_split = 1.5\n", "validation_split must be in [0, 1)"),
        ("[train]\nrecipe = 'fast'\n", "unknown recipe 'fast'"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_replace_validates() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        Config().replace(train={"batch_size": 0})


def test_precision_is_checked_and_the_seed_recipe_is_float32() -> None:
    assert recipe("seed").train.precision == "float32"
    assert recipe("default").train.precision == "auto"
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_config(overrides={"train.precision": "float8"})


@pytest.mark.parametrize(
    ("text", "size"),
    [("auto", None), ("96", (96, 96)), ("96x64", (96, 64)), (" 32 X 48", (32, 48))],
)
def test_image_size_reads_n_or_h_by_w(text: str, size: tuple[int, int] | None) -> None:
    from cnnlab.config import image_size

    assert image_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "96x", "4", "2000", "96x64x3", "-32"])
def test_a_bad_image_size_is_one_clear_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_config(overrides={"data.image_size": text})


def test_an_image_folder_takes_the_photos_recipe_unless_one_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "my signs"
    folder.mkdir()
    photos = load_config(overrides={"data.dataset": str(folder)})
    assert photos.train.recipe == "photos" and photos.model.architecture == "photo_cnn"
    assert photos.run_name == "photo_cnn-my signs"  # the folder's name, not its path
    chosen = load_config(recipe_name="default", overrides={"data.dataset": str(folder)})
    assert chosen.train.recipe == "default" and chosen.model.architecture == "basic_cnn"
    preset = load_config(preset="improved", overrides={"data.dataset": str(folder)})
    assert preset.model.architecture == "improved"  # a preset's architecture wins
    assert load_config().train.recipe == "default"  # Fashion-MNIST keeps its recipe
