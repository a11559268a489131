"""Feature maps: what every convolution and pooling layer outputs for one image.

This is the notes' "the filters find edges, pooling shrinks the picture" seen on a real model:
one grid per layer, each small panel one channel, the input image first.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from cnnlab._backend import keras as _keras
from cnnlab.visualize._common import figure

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

FEATURE_CMAP = "viridis"
GRID_GAP = 1  # pixels of blank space between the tiles of a grid


def spatial_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's Conv2D and 2-D pooling layers, in order (the layers that make feature maps)."""
    keras = _keras()
    kinds = (keras.layers.Conv2D, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


class SymbolicGraph(NamedTuple):
    """One symbolic graph of a model: its input, each layer's (input, output), its output."""

    input: Any
    layers: dict[str, tuple[Any, Any]]
    output: Any


def symbolic_graph(model: keras.Model, image_shape: tuple[int, ...]) -> SymbolicGraph:
    """The tensors to build a model that reads a model's inner layers, for one image shape.

    A Keras 3 Sequential loaded from a .keras file has several call nodes per layer (it is
    re-traced while loading), so `layer.output` may belong to another trace than
    `model.outputs`, and an unbuilt Sequential has no tensors at all. So a Sequential is
    re-traced here on a fresh `keras.Input` (same layers, same weights); a functional model
    already has one graph and is used as it is.
    """
    keras = _keras()
    if isinstance(model, keras.Sequential):
        tensor = start = keras.Input(shape=image_shape)
        layers = {}
        for layer in model.layers:
            output = layer(tensor)
            layers[layer.name] = (tensor, output)
            tensor = output
        return SymbolicGraph(start, layers, tensor)
    inputs, outputs = model.inputs, model.outputs
    # A single tensor, not a one-item list, so calling with one array raises no structure warning.
    return SymbolicGraph(
        inputs[0] if len(inputs) == 1 else inputs,
        {
            layer.name: (layer.input, layer.output)
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        },
        outputs[0] if len(outputs) == 1 else outputs,
    )


def as_image(image_array: NDArray[Any]) -> NDArray[np.float32]:
    """An (H, W) or (H, W, C) array as float32 (H, W, C), the shape a 2-D conv model reads."""
    image = np.asarray(image_array, dtype=np.float32)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected one image of shape (H, W) or (H, W, C), got {image.shape}")
    return image


def feature_maps(
    model: keras.Model, image_array: NDArray[Any]
) -> list[tuple[str, NDArray[np.float32]]]:
    """The output of every Conv2D and pooling layer for one image, as (layer name, (H, W, C))."""
    keras = _keras()
    image = as_image(image_array)
    layers = spatial_layers(model)
    if not layers:
        return []
    outputs = _extractor(model, image.shape)(image[None], training=False)
    if len(layers) == 1:  # a one-output model returns the tensor itself
        outputs = [outputs]
    return [
        (layer.name, keras.ops.convert_to_numpy(out)[0].astype(np.float32))
        for layer, out in zip(layers, outputs, strict=True)
    ]


# One extractor per (model, image shape), built once: building one calls every layer on a new
# symbolic input, which adds a node to each layer, so rebuilding it per image would grow a
# long-running server's memory without bound. Weak keys: a dropped model takes its extractors.
_EXTRACTORS: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], Any]] = (
    weakref.WeakKeyDictionary()
)
_EXTRACTORS_LOCK = threading.Lock()


def _extractor(model: keras.Model, image_shape: tuple[int, ...]) -> keras.Model:
    """A model from `model`'s input to the outputs of its conv and pooling layers (cached)."""
    with _EXTRACTORS_LOCK:
        per_shape = _EXTRACTORS.setdefault(model, {})
        if image_shape not in per_shape:
            graph = symbolic_graph(model, image_shape)
            outputs = [graph.layers[layer.name][1] for layer in spatial_layers(model)]
            per_shape[image_shape] = _keras().Model(graph.input, outputs)
        return per_shape[image_shape]


def tile_channels(maps: NDArray[Any], columns: int | None = None) -> NDArray[np.float32]:
    """Lay out the channels of an (h, w, n) array as one 2-D grid image, NaN between tiles.

    One image instead of n axes keeps a 64-channel layer fast to draw and easy to read; the NaN
    gaps are drawn in the colour map's "bad" colour.
    """
    height, width, count = maps.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full(
        (rows * (height + GRID_GAP) - GRID_GAP, columns * (width + GRID_GAP) - GRID_GAP),
        np.nan,
        dtype=np.float32,
    )
    for index in range(count):
        top = (index // columns) * (height + GRID_GAP)
        left = (index % columns) * (width + GRID_GAP)
        grid[top : top + height, left : left + width] = maps[:, :, index]
    return grid


def plot_features(
    model: keras.Model, image_array: NDArray[Any], *, max_channels: int = 64
) -> Figure:
    """One grid of channels per conv/pooling layer, titled with its name and output shape; the
    input first (in grey, or in colour for an RGB input)."""
    import matplotlib

    image = as_image(image_array)
    maps = feature_maps(model, image)
    panels = [("input", image), *maps]
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = figure()
    fig.set_size_inches(3.4 * columns, 3.6 * rows)
    fig.suptitle(f"Feature maps of {model.name} for one image", fontsize="large")
    cmap = matplotlib.colormaps[FEATURE_CMAP].with_extremes(bad="white")
    subfigs = fig.subfigures(rows, columns, squeeze=False).ravel()
    for subfig, (name, values) in zip(subfigs, panels, strict=False):
        height, width, channels = values.shape
        shown = min(channels, max_channels)
        title = f"{name}  {height}x{width}x{channels}"
        if shown < channels:
            title += f"\n(first {shown} channels)"
        subfig.suptitle(title, fontsize="medium")
        ax = subfig.subplots()
        if name == "input" and channels == 1:
            picture = ax.imshow(values[:, :, 0], cmap="gray")
        elif name == "input" and channels == 3:  # a colour model's input, as it sees it
            ax.imshow(np.clip(values, 0.0, 1.0))
            ax.set_xlabel("in colour (RGB)", fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        else:
            picture = ax.imshow(tile_channels(values[:, :, :shown]), cmap=cmap)
            ax.set_xlabel(f"{shown} channels, one per tile", fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        label = "pixel value" if name == "input" else "activation"
        subfig.colorbar(picture, ax=ax, shrink=0.8, label=label)
    for subfig in subfigs[len(panels) :]:
        subfig.set_visible(False)
    return fig
