"""Learned convolution kernels as pictures: what a conv layer looks for.

Kernels are drawn with a diverging colour map centred on 0 (red positive, blue negative, white
zero), so an edge detector reads as a red stripe beside a blue one. The first layer of a colour
model reads red, green and blue, so each of its kernels is drawn as a colour tile instead (grey
is a zero weight; a pixel redder than grey weighs red positively), which shows what colour, and
what colour edge, each filter looks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab._backend import keras as _keras
from cnnlab.errors import CnnlabError
from cnnlab.visualize._common import figure
from cnnlab.visualize.features import GRID_GAP, tile_channels

if TYPE_CHECKING:
    import keras
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

KERNEL_CMAP = "RdBu_r"


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's Conv2D layers, in order."""
    keras = _keras()
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def pick_conv_layer(model: keras.Model, layer: str | int | None = None) -> keras.layers.Layer:
    """A Conv2D layer by name, or by position among the conv layers (None: the first)."""
    convs = conv_layers(model)
    if not convs:
        raise CnnlabError(f"model {model.name!r} has no Conv2D layer")
    names = ", ".join(conv.name for conv in convs)
    if layer is None:
        return convs[0]
    if isinstance(layer, int):
        if not -len(convs) <= layer < len(convs):
            raise CnnlabError(
                f"conv layer {layer} is out of range; model {model.name!r} has "
                f"{len(convs)} Conv2D layers ({names})"
            )
        return convs[layer]
    for conv in convs:
        if conv.name == layer:
            return conv
    raise CnnlabError(
        f"no Conv2D layer named {layer!r} in model {model.name!r}; its Conv2D layers are: {names}"
    )


def plot_filters(model: keras.Model, layer: str | int | None = None) -> Figure:
    """Every kernel of one conv layer (default: the first) on one shared scale centred on 0.

    A first layer that reads one channel has its kernels drawn as they are, and one that reads an
    RGB picture has each kernel drawn in colour (`colour_kernels`); a deeper kernel has one slice
    per input channel, and the picture shows their mean.
    """
    keras = _keras()
    conv = pick_conv_layer(model, layer)
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    height, width, in_channels, count = kernel.shape
    shape = "x".join(str(n) for n in kernel.shape)
    title = f"{conv.name}: {count} learned {height}x{width} kernels (kernel shape {shape})"
    if in_channels == 3 and _reads_the_picture(model, conv):
        return _plot_colour_kernels(kernel, title)
    if in_channels > 1:
        kernel = kernel.mean(axis=2, keepdims=True)
        title += f",\nmean over the {in_channels} input channels"
    fig = figure()
    columns = _columns(count)
    fig.set_size_inches(max(4.0, 0.55 * columns + 2.0), max(3.5, 0.55 * -(-count // columns) + 1.5))
    _draw_kernels(fig, kernel[:, :, 0, :], title)
    return fig


def colour_kernels(kernel: NDArray[Any]) -> NDArray[np.float32]:
    """An (h, w, 3, N) RGB kernel set as N colour tiles (N, h, w, 3) in [0, 1]: 0.5 (grey) is a
    zero weight, and every kernel shares one scale (the layer's largest absolute weight), so
    tiles compare with each other as the diverging map's do."""
    values = np.moveaxis(np.asarray(kernel, dtype=np.float32), -1, 0)
    limit = float(np.abs(values).max()) or 1.0
    return np.clip(0.5 + values / (2 * limit), 0.0, 1.0)


def tile_colours(tiles: NDArray[Any], columns: int | None = None) -> NDArray[np.float32]:
    """(N, h, w, 3) colour tiles laid out as one RGBA grid image, transparent between tiles."""
    count, height, width, _ = tiles.shape
    columns = columns or _columns(count)
    rows = -(-count // columns)
    gap = GRID_GAP
    grid = np.zeros((rows * (height + gap) - gap, columns * (width + gap) - gap, 4), np.float32)
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        grid[top : top + height, left : left + width, :3] = tile
        grid[top : top + height, left : left + width, 3] = 1.0
    return grid


def _reads_the_picture(model: keras.Model, conv: keras.layers.Layer) -> bool:
    """True for the model's first conv layer when the model's input is RGB."""
    convs = conv_layers(model)
    return bool(convs) and convs[0] is conv and model.input_shape[-1] == 3


def _plot_colour_kernels(kernel: NDArray[Any], title: str) -> Figure:
    """Each (h, w, 3) kernel of an RGB first layer as one colour tile."""
    count = kernel.shape[-1]
    columns = _columns(count)
    fig = figure()
    fig.set_size_inches(max(6.0, 0.55 * columns + 1.5), max(4.0, 0.55 * -(-count // columns) + 1.6))
    ax = fig.subplots()
    ax.imshow(tile_colours(colour_kernels(kernel), columns), interpolation="nearest")
    ax.set_title(f"{title},\neach kernel in colour: grey = 0, one scale", fontsize="medium")
    ax.set_xlabel(
        "one tile per filter; redder than grey: a positive red weight\n"
        "(greener, bluer likewise; darker: negative)",
        fontsize="small",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_filter_sets(sets: Mapping[str, NDArray[Any]]) -> Figure:
    """Several first-layer kernel sets, each (h, w, 1, N), side by side, each on its own scale.

    Used to compare how `--init-filters random|classic|whitening` start the first layer.
    """
    if not sets:
        raise ValueError("no kernel sets to plot")
    kernels = {name: _first_layer_kernels(name, values) for name, values in sets.items()}
    fig = figure()
    widest = max(_columns(k.shape[-1]) for k in kernels.values())
    fig.set_size_inches(len(kernels) * max(3.5, 0.5 * widest + 1.5), max(4.0, 0.5 * widest + 2))
    fig.suptitle("First-layer kernels, each set on its own scale centred on 0")
    subfigs = fig.subfigures(1, len(kernels), squeeze=False)[0]
    for subfig, (name, values) in zip(subfigs, kernels.items(), strict=True):
        height, width, count = values.shape
        _draw_kernels(subfig, values, f"{name}: {count} kernels, {height}x{width}")
    return fig


def _first_layer_kernels(name: str, values: NDArray[Any]) -> NDArray[np.float32]:
    """An (h, w, 1, N) or (h, w, N) kernel set as float32 (h, w, N)."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 4 and array.shape[2] == 1:
        array = array[:, :, 0, :]
    if array.ndim != 3:
        raise ValueError(f"kernel set {name!r}: expected shape (h, w, 1, N), got {array.shape}")
    return array


def _columns(count: int) -> int:
    return int(np.ceil(np.sqrt(count)))


def _draw_kernels(where: Figure | SubFigure, kernels: NDArray[Any], title: str) -> Axes:
    """Tile (h, w, N) kernels into one image on a diverging scale, with a colour bar."""
    import matplotlib

    limit = float(np.abs(kernels).max()) or 1.0
    cmap = matplotlib.colormaps[KERNEL_CMAP].with_extremes(bad="0.85")
    ax = where.subplots()
    picture = ax.imshow(tile_channels(kernels), cmap=cmap, vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("one tile per filter, numbered left to right, top to bottom", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    where.colorbar(picture, ax=ax, shrink=0.8, label="weight")
    return ax
