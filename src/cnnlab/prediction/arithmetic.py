"""The arithmetic behind one number of a feature map: what a conv or pooling cell computed.

    cell = explain_cell(model, model_input, "conv2d", row=0, col=5, channel=3)
    cell.total, cell.value, cell.keras_value       # sum + bias, after relu, and Keras' own

A convolution's output at (row, col, channel) is the sum, over every input channel, of the input
patch under the kernel times that channel's kernel slice, plus the bias, then the activation; a
pooling cell is the maximum (or mean) of its window in one channel. This module reads the layer's
real input (whatever Keras fed it: the picture, a previous layer, a BatchNormalization) and its
real output through a sub-model, redoes that sum in float64 and returns every term of it with
Keras' answer beside it, so the page, the API and a notebook can show that the numbers add up.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab._backend import keras as _keras
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    import keras

__all__ = ["CellArithmetic", "UnknownLayer", "explain_cell", "explainable_layers"]

_FLOAT64_ACTIVATIONS = {"linear": lambda x: x, "relu": lambda x: np.maximum(x, 0.0)}
"""The common activations, kept in float64; any other is Keras' own, in float32."""
FLOAT32_TOLERANCE = 1e-5
"""Relative to the size of the terms summed: float32 sums of a few hundred terms, in any order."""


class UnknownLayer(CnnlabError):
    """No layer of that name in the model."""


@dataclass(frozen=True, eq=False)  # arrays: compare fields, not objects
class CellArithmetic:
    """How one output cell of a Conv2D or pooling layer was computed, term by term.

    Arrays are float64, (window height, window width, input channels) for a conv and (window
    height, window width) for pooling, over the layer's input window of this cell: `rows` and
    `cols` are its [start, stop) in the input map, starting above or left of 0 and ending past
    its edge where 'same' padding adds zeros there (`padding` marks those positions: a conv
    reads them as 0, pooling leaves them out). Values are rounded as the layer computes them
    (its compute dtype: bfloat16 in a mixed_bfloat16 model), then summed in float64.
    """

    layer: str
    kind: str
    """The Keras layer class: Conv2D, MaxPooling2D or AveragePooling2D."""
    row: int
    col: int
    channel: int
    previous: str
    """The layer whose output this layer read ("input": the model's input)."""
    previous_shape: tuple[int, int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    patch: NDArray[np.float64]
    """The input window (conv: every input channel; pooling: the cell's channel), 0 in padding."""
    padding: NDArray[np.bool_]
    total: float
    """Conv: the products' sum plus the bias (before the activation); pooling: the max or mean."""
    value: float
    """What this explanation computes for the cell: the activation of `total` (conv), `total`."""
    keras_value: float
    """The layer's own output for the cell, from Keras."""
    tolerance: float
    """How far `value` may be from `keras_value`: float32 sums in another order, or the
    rounding of a lower-precision compute dtype, relative to the size of the terms."""
    dtype: str
    """The layer's compute dtype (float32, or bfloat16 in a mixed_bfloat16 model)."""
    kernel: NDArray[np.float64] | None = None
    """Conv: the kernel slice of this output channel, one per input channel."""
    bias: float = 0.0
    activation: str | None = None
    """Conv: the activation's name ("linear" for none)."""
    operation: str | None = None
    """Pooling: "max" or "mean"."""

    @property
    def products(self) -> NDArray[np.float64]:
        """Conv: input times kernel, position by position (zero in padding)."""
        if self.kernel is None:
            raise CnnlabError(f"{self.layer} is a pooling layer: it multiplies nothing")
        return self.patch * self.kernel

    @property
    def channel_sums(self) -> NDArray[np.float64]:
        """Conv: each input channel's share of the sum (its products added up)."""
        return self.products.sum(axis=(0, 1))

    @property
    def agrees(self) -> bool:
        """True when this sum equals what Keras computed, to `tolerance`."""
        return abs(self.value - self.keras_value) <= self.tolerance

    def describe(self) -> str:
        """The rule this cell follows, in one sentence for a learner."""
        height, width = self.padding.shape
        if self.kernel is None:
            largest = "largest" if self.operation == "max" else "mean"
            return (
                f"Each output of {self.layer} is the {largest} value of a {height}x{width} "
                f"window of one channel of {self.previous}'s output (the same channel)."
            )
        channels = self.patch.shape[-1]
        every = (
            "the input channel" if channels == 1 else f"every one of the {channels} input channels"
        )
        then = "" if self.activation == "linear" else f", then {self.activation}"
        return (
            f"Each output of {self.layer} is the sum of input x kernel over the {height}x{width} "
            f"window of {every}, plus the bias{then}."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers: arrays as nested lists, per input channel for a conv."""
        result: dict[str, Any] = {
            "layer": self.layer,
            "kind": self.kind,
            "row": self.row,
            "col": self.col,
            "channel": self.channel,
            "previous": self.previous,
            "previous_shape": list(self.previous_shape),
            "rows": list(self.rows),
            "cols": list(self.cols),
            "padding": self.padding.tolist(),
            "total": self.total,
            "value": self.value,
            "keras_value": self.keras_value,
            "tolerance": self.tolerance,
            "agrees": self.agrees,
            "dtype": self.dtype,
            "explanation": self.describe(),
        }
        if self.kernel is None:
            window = np.where(self.padding, np.nan, self.patch)
            result["operation"] = self.operation
            result["window"] = [[None if np.isnan(v) else float(v) for v in r] for r in window]
            return result
        products = self.products
        result["activation"] = self.activation
        result["bias"] = self.bias
        result["inputs"] = [
            {
                "channel": index,
                "patch": self.patch[:, :, index].tolist(),
                "kernel": self.kernel[:, :, index].tolist(),
                "products": products[:, :, index].tolist(),
                "sum": float(products[:, :, index].sum()),
            }
            for index in range(self.patch.shape[-1])
        ]
        return result


def explainable_layers(model: keras.Model) -> list[str]:
    """The names of the model's layers `explain_cell` can explain, in order: its Conv2D and
    2-D pooling layers, the ones whose feature maps the page shows."""
    from cnnlab.visualize.features import spatial_layers

    return [layer.name for layer in spatial_layers(model)]


def explain_cell(
    model: keras.Model, model_input: NDArray[Any], layer: str, row: int, col: int, channel: int
) -> CellArithmetic:
    """The arithmetic of `layer`'s output at (`row`, `col`, `channel`) for one model input,
    (H, W) or (H, W, C) exactly as the model reads it (`Predictor.prepare`'s `model_input`).

    `UnknownLayer` for a name the model does not have; CnnlabError (one line) for a layer
    other than Conv2D, MaxPooling2D or AveragePooling2D (channels last), or a position outside
    its output. Not thread-safe for one model: hold the predictor's `model_lock`.
    """
    from cnnlab.visualize.features import as_image

    keras = _keras()
    found = _layer(model, layer)
    image = as_image(model_input)
    probe = _probe(model, image.shape)
    outputs = probe.model(image[None], training=False)
    index = probe.names.index(found.name)
    layer_in, layer_out = (
        keras.ops.convert_to_numpy(outputs[2 * index + side])[0] for side in (0, 1)
    )
    height, width, channels = layer_out.shape
    if not (0 <= row < height and 0 <= col < width and 0 <= channel < channels):
        raise CnnlabError(
            f"({row}, {col}, {channel}) is outside {found.name}'s output of {height}x{width}x"
            f"{channels}; rows and columns count from 0 to {height - 1} and {width - 1}, "
            f"channels to {channels - 1}"
        )
    dtype = str(found.compute_dtype)
    seen = _as_computed(layer_in, dtype)
    cell = {
        "layer": found.name,
        "kind": type(found).__name__,
        "row": row,
        "col": col,
        "channel": channel,
        "previous": probe.previous[index],
        "previous_shape": tuple(int(size) for size in seen.shape),
        "keras_value": float(np.asarray(layer_out[row, col, channel], dtype=np.float64)),
        "dtype": dtype,
    }
    if isinstance(found, keras.layers.Conv2D):
        return _conv(found, seen, cell)
    return _pooling(found, seen, cell)


def _layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """The model's layer `name`, if it is a channels-last Conv2D or 2-D pooling layer."""
    names = explainable_layers(model)
    try:
        found = model.get_layer(name)
    except ValueError:
        raise UnknownLayer(
            f"the model has no layer {name!r}; layers that can be explained: "
            f"{', '.join(names) or 'none'}"
        ) from None
    if name not in names:
        raise CnnlabError(
            f"{name} is a {type(found).__name__} layer; only Conv2D, MaxPooling2D and "
            f"AveragePooling2D cells can be explained: {', '.join(names) or 'none in this model'}"
        )
    if found.data_format != "channels_last" or getattr(found, "groups", 1) != 1:
        raise CnnlabError(
            f"{name} is a channels-first or grouped layer; only channels-last, ungrouped "
            "layers can be explained"
        )
    return found


def _as_computed(values: NDArray[Any], dtype: str) -> NDArray[np.float64]:
    """`values` rounded to the layer's compute dtype (what it multiplies), as float64."""
    keras = _keras()
    return np.asarray(
        keras.ops.convert_to_numpy(keras.ops.cast(np.asarray(values, np.float32), dtype)),
        dtype=np.float64,
    )


def _window(
    size: int, position: int, kernel: int, stride: int, dilation: int, padding: str
) -> NDArray[np.int64]:
    """The input indices (along one side of `size`) that output `position` reads; those below 0
    or from `size` on are padding. 'same' pads as TensorFlow does: the odd one at the end."""
    reach = (kernel - 1) * dilation + 1
    before = 0
    if padding == "same":
        out = -(-size // stride)
        before = max((out - 1) * stride + reach - size, 0) // 2
    return position * stride - before + dilation * np.arange(kernel)


def _gather(
    seen: NDArray[np.float64], rows: NDArray[np.int64], cols: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The (len(rows), len(cols), channels) window of `seen`, 0 where it falls outside, and
    the mask of those padded positions."""
    height, width = seen.shape[:2]
    inside_r, inside_c = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    padding = ~(inside_r[:, None] & inside_c[None, :])
    window = seen[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)]
    return np.where(padding[:, :, None], 0.0, window), padding


def _span(indices: NDArray[np.int64]) -> tuple[int, int]:
    return int(indices[0]), int(indices[-1]) + 1


def _tolerance(dtype: str, scale: float) -> float:
    """`FLOAT32_TOLERANCE` of the terms' size, or twice a coarser dtype's rounding step."""
    step = float(np.finfo(np.float32).eps)
    if dtype in ("bfloat16", "float16"):
        step = 2.0**-7 if dtype == "bfloat16" else 2.0**-10
    return max(FLOAT32_TOLERANCE, 2 * step) * max(scale, 1e-30)


def _conv(layer: Any, seen: NDArray[np.float64], cell: dict[str, Any]) -> CellArithmetic:
    keras = _keras()
    dtype = cell["dtype"]
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    rows = _window(seen.shape[0], cell["row"], kh, sh, dh, layer.padding)
    cols = _window(seen.shape[1], cell["col"], kw, sw, dw, layer.padding)
    patch, padding = _gather(seen, rows, cols)
    kernels = _as_computed(keras.ops.convert_to_numpy(layer.kernel), dtype)  # (kh, kw, in, out)
    biases = (
        _as_computed(keras.ops.convert_to_numpy(layer.bias), dtype)
        if layer.use_bias
        else np.zeros(kernels.shape[-1])
    )
    # Every output channel's sum at this position, so that an activation over channels
    # (softmax) is applied as Keras applies it; one of them is explained.
    totals = np.einsum("hwi,hwio->o", patch, kernels) + biases
    activation = layer.activation
    name = getattr(activation, "__name__", type(activation).__name__)
    if name in _FLOAT64_ACTIVATIONS:
        activated = _FLOAT64_ACTIVATIONS[name](totals)
    else:  # as Keras applies it, in float32 (jax has no float64 by default)
        activated = keras.ops.convert_to_numpy(activation(totals[None].astype(np.float32)))[0]
    channel = cell["channel"]
    kernel = kernels[:, :, :, channel]
    scale = float(np.abs(patch * kernel).sum() + abs(biases[channel]))
    return CellArithmetic(
        **cell,
        rows=_span(rows),
        cols=_span(cols),
        patch=patch,
        padding=padding,
        kernel=kernel,
        bias=float(biases[channel]),
        total=float(totals[channel]),
        activation=name,
        value=float(activated[channel]),
        tolerance=_tolerance(dtype, scale),
    )


def _pooling(layer: Any, seen: NDArray[np.float64], cell: dict[str, Any]) -> CellArithmetic:
    keras = _keras()
    (ph, pw), (sh, sw) = layer.pool_size, layer.strides
    rows = _window(seen.shape[0], cell["row"], ph, sh, 1, layer.padding)
    cols = _window(seen.shape[1], cell["col"], pw, sw, 1, layer.padding)
    patch, padding = _gather(seen[:, :, cell["channel"] : cell["channel"] + 1], rows, cols)
    window = patch[:, :, 0]
    counted = window[~padding]  # 'same' padding is left out of a max and of a mean
    is_max = isinstance(layer, keras.layers.MaxPooling2D)
    total = float(counted.max() if is_max else counted.mean())
    return CellArithmetic(
        **cell,
        rows=_span(rows),
        cols=_span(cols),
        patch=window,
        padding=padding,
        total=total,
        value=total,
        tolerance=_tolerance(cell["dtype"], float(np.abs(counted).max())),
        operation="max" if is_max else "mean",
    )


# --- The sub-model that reads every explainable layer's input and output ---------------------


@dataclass(frozen=True)
class _Probe:
    model: Any
    """From the model's input to [input, output] of each explainable layer, flattened."""
    names: list[str]
    previous: list[str]
    """For each, the layer whose output it reads ("input": the model's input)."""


# One probe per (model, input shape), as `cnnlab.visualize.features` keeps its extractors:
# building one calls every layer on a new symbolic input, which a server must not repeat.
_PROBES: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], _Probe]] = weakref.WeakKeyDictionary()
_PROBES_LOCK = threading.Lock()


def _probe(model: keras.Model, image_shape: tuple[int, ...]) -> _Probe:
    from cnnlab.visualize.features import symbolic_graph

    with _PROBES_LOCK:
        per_shape = _PROBES.setdefault(model, {})
        if image_shape not in per_shape:
            graph = symbolic_graph(model, image_shape)
            names = explainable_layers(model)
            producers = {id(output): name for name, (_, output) in graph.layers.items()}
            tensors = [tensor for name in names for tensor in graph.layers[name]]
            per_shape[image_shape] = _Probe(
                _keras().Model(graph.input, tensors),
                names,
                [producers.get(id(graph.layers[name][0]), "input") for name in names],
            )
        return per_shape[image_shape]
