"""`cnnlab summary --explain`: every layer's output shape and parameter count, worked out.

Keras' summary gives the numbers; this says where they come from, for any architecture, with
the same arithmetic a learner would do by hand. The shapes and counts are computed here from
each layer's configuration and input shape (not copied from Keras), and the tests check them
against Keras' own `output.shape` and `count_params()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class LayerExplanation:
    """One layer: its output shape and parameter count, and the arithmetic in words."""

    name: str
    type: str
    input_shape: Shape | list[Shape]
    output_shape: Shape
    params: int
    text: str


def explain_model(model: Any) -> list[LayerExplanation]:
    """Explain every layer of a built Keras model (Sequential or functional)."""
    explanations = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        inputs = layer.input
        if isinstance(inputs, (list, tuple)):
            input_shape: Shape | list[Shape] = [tuple(t.shape[1:]) for t in inputs]
        else:
            input_shape = tuple(inputs.shape[1:])
        explanations.append(explain_layer(layer, input_shape))
    return explanations


def explain_layer(layer: Any, input_shape: Shape | list[Shape]) -> LayerExplanation:
    """Work out one layer's output shape and parameters from its config and input shape."""
    kind = type(layer).__name__
    config = layer.get_config()
    rule = _RULES.get(kind)
    if rule is None:
        for base in type(layer).__mro__:
            rule = _RULES.get(base.__name__)
            if rule is not None:
                break
    if rule is None:
        shape = tuple(layer.output.shape[1:])
        params = int(layer.count_params())
        text = (
            f"{_dims(shape)}; {params:,} parameters (as Keras reports them: cnnlab has no "
            f"worked arithmetic for {kind} yet)"
        )
    else:
        shape, params, text = rule(config, input_shape)
    header = f"{layer.name} ({kind})"
    return LayerExplanation(layer.name, kind, input_shape, shape, params, f"{header}: {text}")


def format_explanation(model: Any) -> str:
    """The explanation of every layer as text, with the total at the end."""
    explanations = explain_model(model)
    total = sum(e.params for e in explanations)
    lines = [f'Model "{model.name}": input {_dims(tuple(model.input_shape[1:]))}', ""]
    for e in explanations:
        lines.append(f"- {e.text}")
    terms = " + ".join(f"{e.params:,}" for e in explanations if e.params)
    lines += ["", f"Total params: {terms} = {total:,}" if terms else "Total params: 0"]
    if model.name == SEED_MODEL_NAME:
        lines += ["", SEED_NOTES_CORRECTIONS]
    return "\n".join(lines)


SEED_MODEL_NAME = "Basic_CNN_model"
SEED_NOTES_CORRECTIONS = """\
Where the study notes' prose disagrees with the arithmetic above (their summary table is right):
- "the first conv outputs 26x26": 'same' padding adds a 1-pixel border, so 28x28 stays 28x28
  (26 = 28 - 3 + 1 would need 'valid' padding).
- "max_pooling2d returns 13x13": it halves 28x28 to 14x14; 13 only follows from the wrong 26.
- "Flatten outputs 128 values = 3x3x32": 3x3x32 is 288; the last pooling gives 2x2x32 = 128."""


# --- the arithmetic, one rule per layer type ---------------------------------------------------

Rule = Callable[[dict[str, Any], Any], tuple[Shape, int, str]]


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _dims(shape: Sequence[int | None]) -> str:
    return "x".join("?" if s is None else str(s) for s in shape)


def _window_out(
    size: int | None, window: int, stride: int, padding: str, dilation: int = 1
) -> tuple[int | None, str]:
    """Output length of a sliding window along one axis, and the formula used."""
    if size is None:
        return None, "?"
    span = dilation * (window - 1) + 1
    if padding == "same":
        out = math.ceil(size / stride)
        formula = f"ceil({size}/{stride}) = {out}" if stride > 1 else f"{size}"
        return out, formula
    out = (size - span) // stride + 1
    if stride == 1:
        return out, f"{size} - {span} + 1 = {out}"
    return out, f"floor(({size} - {span})/{stride}) + 1 = {out}"


def _conv2d(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
    height, width, channels = input_shape
    kh, kw = _pair(config["kernel_size"])
    sh, sw = _pair(config["strides"])
    dh, dw = _pair(config.get("dilation_rate", 1))
    filters, padding = int(config["filters"]), config["padding"]
    groups = int(config.get("groups", 1))
    assert channels is not None
    per_filter = kh * kw * (channels // groups)
    bias = filters if config["use_bias"] else 0
    params = filters * per_filter + bias
    out_h, fh = _window_out(height, kh, sh, padding, dh)
    out_w, fw = _window_out(width, kw, sw, padding, dw)
    weights = f"{filters} filters of {kh}x{kw}x{channels // groups}"
    count = f"{filters}*({kh}*{kw}*{channels // groups})"
    if bias:
        weights += f" + {filters} biases"
        count += f" + {filters}"
    if padding == "same" and sh == sw == 1:
        geometry = f"'same' padding keeps {_dims((height, width))}"
    elif padding == "same":
        geometry = f"'same' padding with stride {sh}: {fh}, {fw}"
    else:
        geometry = f"'valid' padding (no border) with a {kh}x{kw} window: {fh}"
        if (fh != fw) or (height != width):
            geometry += f" by {fw}"
    shape = (out_h, out_w, filters)
    text = f"{weights} = {count} = {params:,} parameters; {geometry} -> output {_dims(shape)}"
    return shape, params, text


def _pool2d(keeps: str) -> Rule:
    def rule(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
        height, width, channels = input_shape
        ph, pw = _pair(config["pool_size"])
        strides = config.get("strides") or (ph, pw)
        sh, sw = _pair(strides)
        padding = config["padding"]
        out_h, fh = _window_out(height, ph, sh, padding)
        out_w, fw = _window_out(width, pw, sw, padding)
        shape = (out_h, out_w, channels)
        geometry = fh if fh == fw else f"{fh} by {fw}"
        text = (
            f"keeps {keeps} of each {ph}x{pw} window, stride {sh}, '{padding}': {geometry}; "
            f"each of the {channels} channels is pooled on its own -> output {_dims(shape)}; "
            "no parameters"
        )
        return shape, 0, text

    return rule


def _global_pool(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
    channels = input_shape[-1]
    keep = config.get("keepdims", False)
    shape: Shape = (1, 1, channels) if keep else (channels,)
    text = (
        f"one value per channel over the whole {_dims(input_shape[:-1])} map -> output "
        f"{_dims(shape)}; no parameters"
    )
    return shape, 0, text


def _flatten(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
    size = math.prod(s for s in input_shape if s is not None)
    unknown = any(s is None for s in input_shape)
    shape: Shape = (None,) if unknown else (size,)
    product = "*".join(str(s) for s in input_shape)
    text = f"{_dims(input_shape)} laid out in a row: {product} = {size:,} values; no parameters"
    return shape, 0, text


def _dense(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
    units, inputs = int(config["units"]), input_shape[-1]
    assert inputs is not None
    bias = units if config["use_bias"] else 0
    params = inputs * units + bias
    count = f"{inputs}*{units}" + (f" + {units}" if bias else "")
    shape = (*input_shape[:-1], units)
    text = (
        f"{inputs:,} inputs x {units} units"
        + (f" + {units} biases" if bias else "")
        + f" = {count} = {params:,} parameters -> output {_dims(shape)}"
    )
    return shape, params, text


def _batch_norm(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
    channels = input_shape[-1]
    assert channels is not None
    learned = int(config.get("scale", True)) + int(config.get("center", True))
    params = (learned + 2) * channels
    text = (
        f"per channel a learned scale and shift plus a moving mean and variance: "
        f"{learned + 2}*{channels} = {params:,} parameters ({2 * channels:,} of them "
        f"non-trainable statistics); shape unchanged {_dims(input_shape)}"
    )
    return input_shape, params, text


def _unchanged(what: str) -> Rule:
    def rule(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
        return input_shape, 0, f"{what}; shape unchanged {_dims(input_shape)}; no parameters"

    return rule


def _merge_add(config: dict[str, Any], input_shape: list[Shape]) -> tuple[Shape, int, str]:
    shape = input_shape[0]
    text = (
        f"adds {len(input_shape)} inputs of shape {_dims(shape)} element by element "
        f"(a residual connection) -> output {_dims(shape)}; no parameters"
    )
    return shape, 0, text


def _concatenate(config: dict[str, Any], input_shape: list[Shape]) -> tuple[Shape, int, str]:
    channels = [s[-1] for s in input_shape]
    total = sum(c for c in channels if c is not None)
    shape = (*input_shape[0][:-1], total)
    parts = " + ".join(str(c) for c in channels)
    text = f"stacks channels {parts} = {total} -> output {_dims(shape)}; no parameters"
    return shape, 0, text


def _activation(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
    name = config.get("activation", "relu")
    return _unchanged(f"applies {name} to every value")(config, input_shape)


def _dropout(config: dict[str, Any], input_shape: Shape) -> tuple[Shape, int, str]:
    rate = config.get("rate", 0)
    what = f"zeroes a random {rate:.0%} of values while training (nothing at inference)"
    return _unchanged(what)(config, input_shape)


_RULES: dict[str, Any] = {
    "Conv2D": _conv2d,
    "MaxPooling2D": _pool2d("the largest value"),
    "AveragePooling2D": _pool2d("the mean"),
    "GlobalAveragePooling2D": _global_pool,
    "GlobalMaxPooling2D": _global_pool,
    "Flatten": _flatten,
    "Dense": _dense,
    "BatchNormalization": _batch_norm,
    "Dropout": _dropout,
    "SpatialDropout2D": _dropout,
    "Activation": _activation,
    "ReLU": _unchanged("applies relu to every value"),
    "Rescaling": _unchanged("multiplies every value by a constant"),
    "RandomFlip": _unchanged("flips images at random while training (not at inference)"),
    "RandomTranslation": _unchanged("shifts images at random while training"),
    "RandomErasing": _unchanged("erases a random patch while training"),
    "RandomHorizontalFlip": _unchanged(
        "mirrors half the images left-right while training (not at inference)"
    ),
    "RandomShift": _unchanged("shifts images by whole pixels at random while training"),
    "RandomErasingMask": _unchanged("fills a random box of some images while training"),
    "RandomCanvas": _unchanged(
        "places the image at a random spot on a larger black canvas while training "
        "(not at inference)"
    ),
    "Add": _merge_add,
    "Concatenate": _concatenate,
}
