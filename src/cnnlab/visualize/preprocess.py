"""Each step of turning one picture into the model's input, side by side (no model needed).

    figure = plot_preprocess(preprocess_steps("photo.jpg"))

Grey (with the box that was found), the background level found under it, the mask of what
stood out, the crop (light on black) and the 28x28 input: a wrong crop shows at once. A model
trained on a folder of images has no such steps: `plot_recipe` shows the picture and the input
its run's recipe made of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.prediction.preprocess import Steps
from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from cnnlab.data.folders import Recipe

BOX_COLOUR = "#e5484d"


def plot_preprocess(steps: Steps, title: str | None = None) -> Figure:
    """One row of five panels: grey + box, background, mask, crop, model input."""
    from matplotlib.patches import Rectangle

    fig = figure()
    fig.set_size_inches(13, 3.4)
    axes = fig.subplots(1, 5)
    low, high = float(steps.grey.min()), float(steps.grey.max())

    _show(axes[0], steps.grey, "1. grey", vmin=0, vmax=255)
    if steps.box is not None:
        left, top, right, bottom = (edge / steps.scale for edge in steps.box)
        axes[0].add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                right - left,
                bottom - top,
                fill=False,
                edgecolor=BOX_COLOUR,
                linewidth=1.5,
            )
        )
    spread = f"{float(steps.background.min()):.0f}..{float(steps.background.max()):.0f}"
    _show(axes[1], steps.background, f"2. background ({spread})", vmin=low, vmax=high)
    overlay = np.dstack([steps.grey / 255] * 3) * 0.5
    overlay[steps.mask] = (0.95, 0.3, 0.3)
    _show(axes[2], overlay, f"3. mask ({int(steps.mask.sum()):,} px)")
    if steps.crop is None:
        _show(axes[3], np.zeros((1, 1)), "4. crop: nothing stood out", vmin=0, vmax=1)
    else:
        box = ", ".join(str(edge) for edge in steps.box or ())
        negated = "negated, " if steps.object_is_dark else ""
        _show(axes[3], steps.crop, f"4. crop ({negated}box {box})", vmin=0, vmax=1)
    height, width = steps.array.shape[:2]
    _show(axes[4], steps.array[:, :, 0], f"5. model input {height}x{width}", vmin=0, vmax=1)
    if title:
        fig.suptitle(title)
    return fig


def plot_recipe(picture: Any, model_input: np.ndarray, recipe: Recipe) -> Figure:
    """Two panels: the picture (upright, as a viewer shows it) and the model input the folder
    `recipe` made of it (colour, size, resize mode), as training made its images."""
    fig = figure()
    fig.set_size_inches(7.5, 3.6)
    left, right = fig.subplots(1, 2)
    pixels = np.asarray(picture)
    _show(left, pixels, f"1. picture {pixels.shape[1]}x{pixels.shape[0]}")
    height, width, channels = model_input.shape
    shown = model_input[:, :, 0] if channels == 1 else model_input
    _show(right, shown, f"2. model input {width}x{height} ({recipe.color}, {recipe.resize})", 0, 1)
    fig.suptitle("The run's input recipe: the whole picture, as the training images were made")
    return fig


def _show(
    ax: Axes, image: np.ndarray, title: str, vmin: float | None = None, vmax: float | None = None
) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest", vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
