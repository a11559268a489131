"""Every picture saves as a readable, non-blank PNG of a sensible size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.model.kernels import CLASSIC_FILTERS, classic_kernel_stack, whitening_filters
from cnnlab.visualize._common import save_png
from cnnlab.visualize.convpool import plot_convpool
from cnnlab.visualize.features import plot_features
from cnnlab.visualize.filters import plot_filter_sets, plot_filters
from cnnlab.visualize.gradcam import plot_gradcam


def assert_readable_png(figure, path: Path) -> None:  # type: ignore[no-untyped-def]
    save_png(figure, path)
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        width, height = picture.size
        gray = np.asarray(picture.convert("L"), dtype=np.float64)
    assert 200 <= width <= 6000 and 200 <= height <= 6000, (width, height)
    assert gray.var() > 100, "the picture looks blank"


@pytest.mark.parametrize("layer", [None, 1, "conv2d_last"])
def test_plot_filters(tiny_model, tmp_path: Path, layer) -> None:  # type: ignore[no-untyped-def]
    if layer == "conv2d_last":
        layer = tiny_model.layers[2].name
    fig = plot_filters(tiny_model, layer)
    title = fig.axes[0].get_title()
    if layer is None:
        assert "3x3x1x4" in title and "mean" not in title
    else:
        assert "mean over the 4 input channels" in title
    assert_readable_png(fig, tmp_path / "filters.png")


def test_plot_filters_of_the_seed_model(tmp_path: Path) -> None:
    from cnnlab.model.builder import build_model

    model = build_model("basic_cnn", (28, 28, 1), 10)
    fig = plot_filters(model, 1)
    assert "mean over the 64 input channels" in fig.axes[0].get_title()
    assert_readable_png(fig, tmp_path / "filters.png")


def test_plot_filter_sets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sets = {
        "random": rng.uniform(-0.3, 0.3, (3, 3, 1, 64)).astype(np.float32),
        "classic": classic_kernel_stack(),
        "whitening": whitening_filters(rng.random((20, 28, 28))),
    }
    assert_readable_png(plot_filter_sets(sets), tmp_path / "sets.png")


def test_plot_features(tiny_model, image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert_readable_png(plot_features(tiny_model, image), tmp_path / "features.png")


def test_plot_features_of_the_seed_model(image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cnnlab.model.builder import build_model

    model = build_model("basic_cnn", (28, 28, 1), 10)
    fig = plot_features(model, image)
    titles = [sub.get_suptitle() for sub in fig.subfigs if sub.get_visible()]
    assert titles[0] == "input  28x28x1"
    assert "conv2d" in titles[1] and "28x28x64" in titles[1]
    assert_readable_png(fig, tmp_path / "features.png")


def test_plot_convpool(image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fig = plot_convpool(image)
    titles = {ax.get_title() for ax in fig.axes}
    assert "original 28x28" in titles
    assert "26x26 after 3x3 'valid' conv" in titles
    assert "13x13 after 2x2 max pool" in titles
    assert sum(len(ax.texts) == 9 for ax in fig.axes) == len(CLASSIC_FILTERS)
    assert_readable_png(fig, tmp_path / "convpool.png")


def test_plot_gradcam(tiny_model, image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fig = plot_gradcam(tiny_model, image, ["a", "b", "c"])
    assert fig.get_suptitle().startswith("predicted ") and "%)" in fig.get_suptitle()
    assert_readable_png(fig, tmp_path / "gradcam.png")
