"""FLOPs of a Keras model, counted from its layers.

Convention: one multiply-accumulate (MAC) is 2 FLOPs; only Conv and Dense layers are counted
(their biases, activations and pooling add well under 1% here); a training step costs about
3x the forward pass (forward, plus gradients with respect to inputs and to weights).
"""

from __future__ import annotations

import math
from typing import Any

TRAIN_TO_FORWARD = 3
CONVENTION = (
    "forward = 2 x MACs of every Conv and Dense layer (bias, activation and pooling not counted); "
    f"training = {TRAIN_TO_FORWARD} x forward"
)
_COUNTED = ("Conv1D", "Conv2D", "Conv3D", "Dense")


def layer_macs(layer: Any) -> int:
    """Multiply-accumulates of one layer for one input sample (0 for layers not counted).

    For a channels-last Conv or Dense layer every output position does `prod(kernel.shape)`
    MACs (kernel taps x input channels per group x output channels).
    """
    if type(layer).__name__ not in _COUNTED:
        return 0
    positions = math.prod(int(d) for d in layer.output.shape[1:-1])
    return positions * math.prod(int(d) for d in layer.kernel.shape)


def forward_flops(model: Any) -> dict[str, int]:
    """Forward FLOPs per image of each counted layer, by layer name, in model order."""
    return {layer.name: 2 * macs for layer in model.layers if (macs := layer_macs(layer))}
