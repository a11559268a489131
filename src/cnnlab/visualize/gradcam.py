"""Grad-CAM: which part of the image made the model choose a class.

Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization": weight each channel of the last conv layer by the spatial mean of the class
score's gradient, sum, keep the positive part, and scale it up to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from cnnlab._backend import keras as _keras
from cnnlab.visualize._common import figure
from cnnlab.visualize.features import as_image, symbolic_graph
from cnnlab.visualize.filters import pick_conv_layer

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

HEAT_CMAP = "jet"
HEAT_ALPHA = 0.45


def gradcam(
    model: keras.Model,
    image_array: NDArray[Any],
    class_index: int | None = None,
    layer: str | int | None = None,
) -> tuple[NDArray[np.float32], int]:
    """Grad-CAM heat map (H, W) in [0, 1] at the image's size, and the class it explains.

    `class_index` defaults to the predicted class, `layer` to the last Conv2D layer. The class
    score is the pre-softmax logit when the model ends in a softmax Dense layer (as the paper
    asks: softmax saturates), else the model's output. Autodiff needs the backend, so this is
    one of the few places that calls TensorFlow (`tf.GradientTape`) directly.
    """
    import tensorflow as tf

    keras = _keras()
    image = as_image(image_array)
    conv = pick_conv_layer(model, -1 if layer is None else layer)
    head = model.layers[-1]
    logits_from_head = (
        isinstance(head, keras.layers.Dense)
        and getattr(head.activation, "__name__", "") == "softmax"
    )
    graph = symbolic_graph(model, image.shape)
    score_source = graph.layers[head.name][0] if logits_from_head else graph.output
    grad_model = keras.Model(graph.input, [graph.layers[conv.name][1], score_source])

    ops = keras.ops
    with tf.GradientTape() as tape:
        maps, scores = grad_model(image[None], training=False)
        if logits_from_head:
            scores = ops.matmul(scores, head.kernel)
            if head.use_bias:
                scores = scores + head.bias
        if class_index is None:
            class_index = int(ops.argmax(scores[0]))
        score = scores[:, class_index]
    gradients = tape.gradient(score, maps)

    weights = ops.mean(gradients, axis=(1, 2))  # one weight per channel: (1, C)
    cam = ops.relu(ops.sum(maps * weights[:, None, None, :], axis=-1))[0]
    return _upsample(ops.convert_to_numpy(cam), image.shape[:2]), class_index


def plot_gradcam(
    model: keras.Model,
    image_array: NDArray[Any],
    class_names: Sequence[str] | None = None,
    *,
    class_index: int | None = None,
    layer: str | int | None = None,
) -> Figure:
    """The image, and the Grad-CAM heat map over it, titled with the predicted class and its
    probability (`class_index` explains another class than the predicted one)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    keras = _keras()
    image = as_image(image_array)
    heat, class_index = gradcam(model, image, class_index, layer)
    output = keras.ops.convert_to_numpy(model(image[None], training=False))[0]
    probabilities = _probabilities(output)
    predicted = int(np.argmax(probabilities))
    names = list(class_names) if class_names else [f"class {i}" for i in range(len(output))]
    conv = pick_conv_layer(model, -1 if layer is None else layer)
    shape = "x".join(str(n) for n in conv.output.shape[1:])

    fig = figure()
    fig.set_size_inches(8.0, 4.4)
    fig.suptitle(
        f"predicted {names[predicted]} ({probabilities[predicted]:.1%})"
        f"\nGrad-CAM of {model.name} on layer {conv.name} ({shape})"
    )
    shown = image[:, :, 0] if image.shape[-1] == 1 else image
    left, right = fig.subplots(1, 2)
    left.imshow(shown, cmap="gray")
    left.set_title(f"input {image.shape[0]}x{image.shape[1]}", fontsize="medium")
    right.imshow(shown, cmap="gray")
    right.imshow(heat, cmap=HEAT_CMAP, alpha=HEAT_ALPHA, vmin=0.0, vmax=1.0)
    right.set_title(
        f"where it looked for {names[class_index]} ({probabilities[class_index]:.1%})",
        fontsize="medium",
    )
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    # The bar shows the colour map at full strength, not faded by the overlay's alpha.
    scale = ScalarMappable(Normalize(0.0, 1.0), cmap=HEAT_CMAP)
    fig.colorbar(scale, ax=right, shrink=0.85, label="relative importance")
    return fig


def _upsample(cam: NDArray[Any], size: tuple[int, int]) -> NDArray[np.float32]:
    """Scale a coarse (h, w) map to `size` (bilinear) and to [0, 1]; all zeros stays zeros."""
    cam = np.asarray(cam, dtype=np.float32)
    resized = Image.fromarray(cam).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    heat = np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)
    top = float(heat.max())
    return heat / top if top > 0 else heat


def _probabilities(output: NDArray[Any]) -> NDArray[np.float64]:
    """The model's output as probabilities: as is when it already is a softmax, else softmaxed."""
    output = np.asarray(output, dtype=np.float64)
    if output.min() >= 0 and abs(output.sum() - 1) < 1e-3:
        return output
    shifted = np.exp(output - output.max())
    return shifted / shifted.sum()
