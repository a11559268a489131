"""Pictures of a colour model (issue 27): an RGB first layer's filters in colour, and features,
Grad-CAM and `visualize preprocess RUN IMAGE` over the photo prepared with the run's recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from colour_run import COLOUR_RECIPE, colour_model, colour_picture, encoded, write_colour_run
from PIL import Image

from cnnlab import cli
from cnnlab._backend import keras as _keras
from cnnlab.data.folders import scale
from cnnlab.prediction.inference import KerasPredictor
from cnnlab.visualize.features import plot_features
from cnnlab.visualize.filters import colour_kernels, plot_filters
from cnnlab.visualize.render import _model_input


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_run(tmp_path_factory.mktemp("colour") / "colour-run")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "green-photo.jpg"
    path.write_bytes(encoded(colour_picture("green", (60, 44)), "jpeg"))
    return path


def test_an_rgb_first_layer_is_drawn_in_colour() -> None:
    """Kernel c of the colour model weighs channel c only: its tile is grey except that
    channel, brighter at the centre tap (weight 1) than above it (0.25)."""
    figure = plot_filters(colour_model())
    grid = np.asarray(figure.axes[0].images[0].get_array())
    assert grid.shape == (7, 7, 4)  # 3 tiles of 3x3, 2 columns, 1-pixel transparent gaps
    tiles = colour_kernels(colour_model().get_layer("conv").kernel.numpy())
    np.testing.assert_array_equal(grid[0:3, 0:3, :3], tiles[0])
    red = grid[0:3, 0:3, :3]
    assert red[1, 1, 0] == 1.0 and red[0, 1, 0] == pytest.approx(0.625)
    assert (red[:, :, 1:] == 0.5).all() and (red[2, :, 0] == 0.5).all()
    assert grid[3, :, 3].max() == 0  # the gap row is transparent
    assert "in colour" in figure.axes[0].get_title()


def test_a_deeper_layer_over_three_channels_keeps_the_diverging_map() -> None:
    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(3, 3, name="first"),
            keras.layers.Conv2D(4, 3, name="second"),
        ]
    )
    image = plot_filters(model, "second").axes[0].images[0]
    assert np.asarray(image.get_array()).ndim == 2  # one value per pixel: the colour map's
    assert image.get_cmap().name.startswith("RdBu_r")


def test_features_show_the_colour_input(colour_run: Path, photo: Path) -> None:
    predictor = KerasPredictor.load(colour_run)
    model_input = _model_input(predictor, photo)
    np.testing.assert_array_equal(model_input, scale(COLOUR_RECIPE.load(photo)))
    figure = plot_features(predictor.model, model_input)
    shown = np.asarray(figure.subfigs[0].axes[0].images[0].get_array())
    np.testing.assert_array_equal(shown, model_input)  # the input panel, in colour


@pytest.mark.parametrize("kind", ["filters", "features", "gradcam", "preprocess"])
def test_visualize_a_colour_run(
    kind: str, colour_run: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"{kind}.png"
    argv = ["visualize", kind, str(colour_run), *([] if kind == "filters" else [str(photo)])]
    assert cli.main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with Image.open(out) as picture:
        assert picture.size[0] > 200 and picture.size[1] > 200
        colours = np.asarray(picture.convert("RGB"), np.int16)
    # Every picture shows the green photo or the colour kernels: some pixels are clearly green.
    greenish = (colours[..., 1] - colours[..., 0] > 80) & (colours[..., 1] - colours[..., 2] > 80)
    assert greenish.any()
    if kind == "preprocess":
        assert "input recipe" in printed and "'resize': 'squash'" in printed


def test_gradcam_overlays_the_colour_input(colour_run: Path, photo: Path) -> None:
    from cnnlab.visualize.gradcam import plot_gradcam

    predictor = KerasPredictor.load(colour_run)
    model_input = _model_input(predictor, photo)
    figure = plot_gradcam(predictor.model, model_input, predictor.class_names)
    left, right = figure.axes[:2]
    np.testing.assert_array_equal(np.asarray(left.images[0].get_array()), model_input)
    np.testing.assert_array_equal(np.asarray(right.images[0].get_array()), model_input)
    assert "predicted green" in figure._suptitle.get_text()  # type: ignore[union-attr]
