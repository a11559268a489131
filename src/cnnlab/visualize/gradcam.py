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
from cnnlab.errors import CnnlabError
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
    asks: softmax saturates), else the model's output. Autodiff is the backend's own
    (TensorFlow's GradientTape, torch's autograd, jax.grad): see `_maps_and_gradients`.
    """
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

    def class_scores(outputs: Any) -> Any:
        maps, scores = outputs
        if logits_from_head:
            scores = ops.matmul(scores, head.kernel)
            if head.use_bias:
                scores = scores + head.bias
        return maps, scores

    if class_index is None:
        _, scores = class_scores(grad_model(image[None], training=False))
        class_index = int(ops.argmax(scores[0]))
    maps, gradients = _maps_and_gradients(
        lambda: class_scores(grad_model(image[None], training=False)), conv, class_index
    )

    weights = ops.mean(gradients, axis=(1, 2))  # one weight per channel: (1, C)
    cam = ops.relu(ops.sum(maps * weights[:, None, None, :], axis=-1))[0]
    return _upsample(ops.convert_to_numpy(cam), image.shape[:2]), class_index


def _maps_and_gradients(run: Any, conv: Any, class_index: int) -> tuple[Any, Any]:
    """The conv layer's maps for one forward pass `run()` -> (maps, scores), and the gradient
    of scores[:, class_index] with respect to them, with the running backend's autodiff."""
    keras = _keras()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            maps, scores = run()
            score = scores[:, class_index]
        return maps, tape.gradient(score, maps)
    if backend == "torch":
        import torch

        with torch.enable_grad():
            maps, scores = run()
            maps.retain_grad()  # an intermediate tensor: keep its gradient
            scores[:, class_index].sum().backward()
        return maps.detach(), maps.grad
    if backend == "jax":
        import jax

        # jax differentiates functions, not tensors: add a zero offset to the conv layer's
        # output for one pass and take the score's gradient with respect to that offset.
        maps, _ = run()
        original = conv.call

        def score_with_offset(offset: Any) -> Any:
            conv.call = lambda *args, **kwargs: original(*args, **kwargs) + offset
            try:
                return run()[1][0, class_index]
            finally:
                del conv.call  # the class's own call again

        return maps, jax.grad(score_with_offset)(keras.ops.zeros_like(maps))
    raise CnnlabError(
        f"gradcam needs the tensorflow, torch or jax Keras backend, not {backend}; "
        "run it with KERAS_BACKEND=tensorflow"
    )


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
