"""A classifier's logits beside its probabilities: what the energy score needs.

cnnlab's models end in a softmax, so they output probabilities, and the probabilities forget the
logits' common level: softmax(z) = softmax(z + c). The "unsure" rule (`cnnlab.calibration`) needs
that level (a picture of something else tends to raise no logit high), so this module builds,
from a trained model, a model with the same input and two outputs: the probabilities, exactly
as before, and the logits the softmax read.

    both = with_logits(model)          # None: the last layer is no softmax this can undo
    probabilities, logits = both.predict_on_batch(batch)

Two heads are undone: a `Dense` (or `Conv2D`) layer whose own activation is the softmax (its
logits come from a copy of the layer without the activation, on the same input and weights), and
a separate `Softmax` or `Activation("softmax")` layer (its input is the logits). The probabilities
output is the model's own tensor, so it is the same number either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab._backend import keras as _keras

if TYPE_CHECKING:
    import keras

_WITH_OWN_ACTIVATION = ("Dense", "Conv2D", "Conv1D")


def with_logits(model: keras.Model) -> keras.Model | None:
    """`model` with a second output, the logits of its final softmax; None where its last layer
    is not a softmax this module can undo, or the model has no single graph input and output."""
    keras = _keras()
    try:
        last = model.layers[-1]
        head_input, probabilities, inputs = _head(keras, model)
    except (AttributeError, IndexError, ValueError, TypeError):
        return None
    kind = type(last).__name__
    if isinstance(head_input, (list, tuple)):
        return None
    if kind == "Softmax" or (kind == "Activation" and _is_softmax(last.activation)):
        logits = head_input
    elif kind in _WITH_OWN_ACTIVATION and _is_softmax(getattr(last, "activation", None)):
        config = {**last.get_config(), "activation": None, "name": f"{last.name}_logits"}
        linear = type(last).from_config(config)
        logits = linear(head_input)
        linear.set_weights(last.get_weights())
    else:
        return None
    return keras.Model(inputs, [probabilities, logits], name=f"{model.name}_with_logits")


def _head(keras: Any, model: keras.Model) -> tuple[Any, Any, Any]:
    """The last layer's input tensor, the model's output and its input, in one graph.

    A Sequential model is called afresh on a new input: its layers may belong to more than one
    model (`cnnlab.export.inference_model` stacks the same layers again), so their first
    recorded input need not be this model's. A functional model's graph is its own.
    """
    if isinstance(model, keras.Sequential):
        inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype)
        x = inputs
        for layer in model.layers[:-1]:
            x = layer(x)
        return x, model.layers[-1](x), inputs
    (output,) = model.outputs
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return model.layers[-1].input, output, inputs


def _is_softmax(activation: Any) -> bool:
    return getattr(activation, "__name__", None) == "softmax" or activation == "softmax"
