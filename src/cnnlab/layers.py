"""cnnlab's own Keras layers, usable in architecture files beside every `keras.layers` class.

`RandomCanvas` (an augmentation, active only while training): each image of the batch is placed
at its own random position on a larger canvas of background, so a fully convolutional model
learns to find a garment anywhere on a picture instead of only one that fills the frame. It is
plain batch operations (a product with one-hot placement matrices), so it compiles the same on
every Keras backend; at inference it passes images through unchanged.

The classes are made on first use (Keras is imported lazily) and registered with Keras'
serialisation under the package name "cnnlab", so a saved model that contains them loads back.
"""

from __future__ import annotations

from typing import Any

from cnnlab._backend import keras as _keras

_LAYERS: dict[str, type] = {}


def custom_layers() -> dict[str, type]:
    """cnnlab's layer classes by name, defined and registered with Keras on the first call."""
    if not _LAYERS:
        _LAYERS.update(_define())
    return _LAYERS


def _define() -> dict[str, type]:
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="cnnlab")
    class RandomCanvas(keras.layers.Layer):  # type: ignore[name-defined]
        """Place each image at a random position on a `size` x `size` canvas (training only).

        Args:
            size: the canvas side in pixels; at least the images' height and width.
            fill_value: the background's value (0.0: black, as Fashion-MNIST's background).
            seed: for the placements; None draws from Keras' global seed.

        The image keeps its pixels and its label; only its position and the frame around it
        change. Every offset from 0 to `size - height` (rows) and `size - width` (columns) is
        equally likely, drawn independently for each image.

        >>> layer = custom_layers()["RandomCanvas"](size=56)
        >>> layer(np.ones((8, 28, 28, 1)), training=True).shape   # (8, 56, 56, 1)
        """

        def __init__(
            self, size: int, fill_value: float = 0.0, seed: int | None = None, **kwargs: Any
        ) -> None:
            super().__init__(**kwargs)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"RandomCanvas: `size` must be a positive integer, got {size!r}")
            self.size = size
            self.fill_value = float(fill_value)
            self.seed = seed
            self._seed_generator = keras.random.SeedGenerator(seed)
            self.supports_masking = True

        def call(self, inputs: Any, training: bool | None = None) -> Any:
            if not training:
                return inputs
            height, width = inputs.shape[1], inputs.shape[2]
            if height is None or width is None:
                raise ValueError("RandomCanvas needs images of a known height and width")
            if height > self.size or width > self.size:
                raise ValueError(
                    f"RandomCanvas: {height}x{width} images do not fit a {self.size}x{self.size} "
                    "canvas; raise `size`"
                )
            batch = ops.shape(inputs)[0]
            x, rows = self._place(inputs, batch, height, "bsh,bhwc->bswc")
            x, cols = self._place(x, batch, width, "bsw,bhwc->bhsc")
            if self.fill_value:
                inside = rows[:, :, None, None] * cols[:, None, :, None]
                x = x + ops.cast(self.fill_value, x.dtype) * (1 - inside)
            return x

        def _place(self, x: Any, batch: Any, length: int, equation: str) -> tuple[Any, Any]:
            """Move each image along one axis by its own random offset, onto `size` pixels.

            A one-hot (batch, size, length) matrix per axis says which source pixel lands
            where; multiplying by it (an einsum) moves pixels exactly (times 1, plus zeros) and
            traces to one static-shape operation on every backend, under XLA and torch.compile
            too (a gather with a per-image index did not compile under torch.compile).
            Also returns which of the `size` positions hold image, (batch, size).
            """
            offsets = keras.random.randint(
                (batch, 1, 1), 0, self.size - length + 1, dtype="int32", seed=self._seed_generator
            )
            shift = (
                ops.arange(self.size, dtype="int32")[None, :, None]
                - ops.arange(length, dtype="int32")[None, None, :]
            )
            onehot = ops.cast(ops.equal(shift, offsets), x.dtype)  # (batch, size, length)
            return ops.einsum(equation, onehot, x), ops.sum(onehot, axis=2)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape  # at inference; while training, height and width become `size`

        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            config.update(size=self.size, fill_value=self.fill_value, seed=self.seed)
            return config

    return {"RandomCanvas": RandomCanvas}
