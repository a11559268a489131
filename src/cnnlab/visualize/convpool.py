"""Convolution and pooling by hand: the notes' first section, made visible.

Each classic 3x3 filter is slid over an image ('valid': no padding, so 28x28 becomes 26x26),
the result passed through a ReLU as in the seed model's Conv2D layers, then 2x2 max pooled
(26x26 becomes 13x13). Plain NumPy and SciPy, no Keras: this is what Conv2D and MaxPool2D do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.model.kernels import CLASSIC_FILTERS
from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POOL_SIZE = 2


def convolve2d(image: NDArray[Any], kernel: NDArray[Any]) -> NDArray[np.float32]:
    """A 'valid' 2-D convolution as Keras Conv2D computes it: cross-correlation, kernel not flipped.

    Uses `scipy.signal.correlate2d(mode="valid")`; an (H, W) image and (kh, kw) kernel give an
    (H - kh + 1, W - kw + 1) result.
    """
    from scipy.signal import correlate2d  # imported here: scipy.signal takes ~0.7 s to load

    image = _as_2d(image)
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim != 2 or kernel.shape[0] > image.shape[0] or kernel.shape[1] > image.shape[1]:
        raise ValueError(f"kernel {kernel.shape} does not fit a 2-D image {image.shape}")
    return correlate2d(image, kernel, mode="valid").astype(np.float32)


def max_pool(image: NDArray[Any], size: int = POOL_SIZE) -> NDArray[np.float32]:
    """Max over non-overlapping size x size blocks, like MaxPool2D(size) with 'valid' padding.

    A leftover row or column (an odd edge for size 2) is dropped, as Keras drops it.
    """
    image = _as_2d(image)
    rows, cols = image.shape[0] // size, image.shape[1] // size
    blocks = image[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return blocks.max(axis=(1, 3))


def plot_convpool(
    image_array: NDArray[Any], filters: Mapping[str, NDArray[Any]] = CLASSIC_FILTERS
) -> Figure:
    """One row per filter: image, kernel, filtered, ReLU, pooled; every panel says its size."""
    image = _as_2d(image_array)
    size = _size(image)
    fig = figure()
    fig.set_size_inches(14.0, 2.6 * len(filters) + 0.6)
    fig.suptitle(
        "Convolution, ReLU and max pooling by hand (as Conv2D 'valid' + relu, then MaxPool2D)"
    )
    axes = fig.subplots(len(filters), 5, squeeze=False)
    for row, (name, kernel) in zip(axes, filters.items(), strict=True):
        kernel = np.asarray(kernel, dtype=np.float32)
        filtered = convolve2d(image, kernel)
        rectified = np.maximum(filtered, 0.0)
        pooled = max_pool(rectified)
        kh, kw = kernel.shape

        row[0].imshow(image, cmap="gray")
        row[0].set_title(f"original {size}", fontsize="medium")
        row[0].set_ylabel(name, fontsize="large")
        _draw_kernel(row[1], kernel, f"{name} kernel {kh}x{kw}")

        limit = float(np.abs(filtered).max()) or 1.0
        shown = row[2].imshow(filtered, cmap="RdBu_r", vmin=-limit, vmax=limit)
        row[2].set_title(f"{_size(filtered)} after {kh}x{kw} 'valid' conv", fontsize="medium")
        fig.colorbar(shown, ax=row[2], shrink=0.85)

        top = float(rectified.max()) or 1.0
        row[3].imshow(rectified, cmap="magma", vmin=0.0, vmax=top)
        row[3].set_title(f"{_size(rectified)} after ReLU", fontsize="medium")
        shown = row[4].imshow(pooled, cmap="magma", vmin=0.0, vmax=top)
        row[4].set_title(
            f"{_size(pooled)} after {POOL_SIZE}x{POOL_SIZE} max pool", fontsize="medium"
        )
        fig.colorbar(shown, ax=row[3:5], shrink=0.85)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def _draw_kernel(ax: Axes, kernel: NDArray[np.float32], title: str) -> None:
    """A small kernel as coloured cells with its numbers written in."""
    limit = float(np.abs(kernel).max()) or 1.0
    ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for (i, j), value in np.ndenumerate(kernel):
        colour = "white" if abs(value) > 0.6 * limit else "black"
        ax.text(j, i, f"{value:.3g}", ha="center", va="center", color=colour, fontsize="small")
    ax.set_title(title, fontsize="medium")


def _as_2d(image: NDArray[Any]) -> NDArray[np.float32]:
    """An (H, W) or (H, W, 1) image as float32 (H, W)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"expected a one-channel image (H, W) or (H, W, 1), got {array.shape}")
    return array


def _size(image: NDArray[Any]) -> str:
    return f"{image.shape[0]}x{image.shape[1]}"
