"""cnnlab's own Keras layers, usable in architecture files beside every `keras.layers` class.

`RandomCanvas` (an augmentation, active only while training): each image of the batch is placed
at its own random position on a larger canvas of background, so a fully convolutional model
learns to find a garment anywhere on a picture instead of only one that fills the frame. It is
plain batch operations (a product with one-hot placement matrices), so it compiles the same on
every Keras backend; at inference it passes images through unchanged.

`RandomHorizontalFlip`, `RandomShift` and `RandomErasingMask` are cheap stand-ins for Keras'
`RandomFlip("horizontal")`, `RandomTranslation` and `RandomErasing` (issue 16: on a GPU, Keras'
interpolating translation made a training step hundreds of times slower). Each is a few batch
operations (a select between an image and its mirror image; a product with one-hot shift
matrices; a box mask from iota comparisons) with static shapes and no interpolation, drawn per
image from one `keras.random.SeedGenerator`. Each is active only while training, passes images
through unchanged at inference, never sees the labels, and keeps values inside the range of the
images and the fill value.

Each is an ordinary class here, importable without Keras (`cnnlab._backend.LazyKerasClass`):
its first instance, or `custom_layers()`, imports Keras, makes the Keras layer class and
registers it with Keras' serialisation under the package name "cnnlab", so a saved model that
contains it loads back.
"""

from __future__ import annotations

from typing import Any

from cnnlab._backend import LazyKerasClass, keras_subclass
from cnnlab._backend import keras as _keras


def custom_layers() -> dict[str, type]:
    """cnnlab's layer classes by name, as Keras layer classes (made and registered with Keras
    on the first call)."""
    return {layer.__name__: keras_subclass(layer) for layer in LAYERS}


class _Augmentation(LazyKerasClass):
    """What cnnlab's augmentation layers share: a seed, the identity unless training, and
    a config of the options named in `_OPTIONS`. Subclasses write `_augment`."""

    keras_base = "layers.Layer"
    keras_package = "cnnlab"
    _OPTIONS: tuple[str, ...] = ()
    _NEEDS_SIZE = True  # whether `_augment` needs the images' height and width

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self._seed_generator = _keras().random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training:
            return inputs
        height, width = inputs.shape[1], inputs.shape[2]
        if self._NEEDS_SIZE and (height is None or width is None):
            raise ValueError(f"{type(self).__name__} needs images of a known height and width")
        return self._augment(inputs, height, width)

    def _augment(self, inputs: Any, height: int, width: int) -> Any:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape  # RandomCanvas: at inference; while training, `size` x `size`

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({name: getattr(self, name) for name in (*self._OPTIONS, "seed")})
        return config


class RandomCanvas(_Augmentation):
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

    _OPTIONS = ("size", "fill_value")

    def __init__(
        self, size: int, fill_value: float = 0.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"RandomCanvas: `size` must be a positive integer, got {size!r}")
        self.size = size
        self.fill_value = float(fill_value)

    def _augment(self, inputs: Any, height: int, width: int) -> Any:
        ops = _keras().ops
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
        keras = _keras()
        ops = keras.ops
        offsets = keras.random.randint(
            (batch, 1, 1), 0, self.size - length + 1, dtype="int32", seed=self._seed_generator
        )
        shift = (
            ops.arange(self.size, dtype="int32")[None, :, None]
            - ops.arange(length, dtype="int32")[None, None, :]
        )
        onehot = ops.cast(ops.equal(shift, offsets), x.dtype)  # (batch, size, length)
        return ops.einsum(equation, onehot, x), ops.sum(onehot, axis=2)


class RandomHorizontalFlip(_Augmentation):
    """Mirror each image left-right with probability 0.5 (training only).

    As Keras' `RandomFlip("horizontal")`: one uniform draw per image, flipped when it is at
    most 0.5. Done as a per-image select between the batch and its mirror image.
    """

    _NEEDS_SIZE = False

    def _augment(self, inputs: Any, height: int, width: int) -> Any:
        keras = _keras()
        ops = keras.ops
        draw = keras.random.uniform((ops.shape(inputs)[0], 1, 1, 1), seed=self._seed_generator)
        return ops.where(draw <= 0.5, ops.flip(inputs, axis=2), inputs)


class RandomShift(_Augmentation):
    """Shift each image by a random whole number of pixels, filling the gap (training only).

    Args:
        height_factor, width_factor: the largest shift as a fraction of the height / width,
            as in Keras' `RandomTranslation` (0.1: up to 10%).
        fill_value: the value of the pixels shifted in (0.0: Fashion-MNIST's background).
        seed: for the shifts; None draws from Keras' global seed.

    Each image's shift along each axis is Keras' `RandomTranslation` draw rounded to the
    nearest pixel: `round(u * length)`, with `u` uniform in [-factor, factor], drawn
    independently per image and axis. On 28 pixels and factor 0.1 that is -3..3 pixels,
    with -2..2 each 1/5.6 likely and -3, 3 each 0.3/5.6 (Keras: any real shift in
    [-2.8, 2.8], interpolated bilinearly). Same range, mean and direction symmetry; a
    spread of 1.66 px instead of 1.62; no blur from interpolation. It is a pad and a
    crop at once: a one-hot (batch, length, length) matrix per axis says which source
    pixel lands where, so the shift is one batched product of static shape.
    """

    _OPTIONS = ("height_factor", "width_factor", "fill_value")

    def __init__(
        self,
        height_factor: float = 0.1,
        width_factor: float = 0.1,
        fill_value: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        for name, value in (("height_factor", height_factor), ("width_factor", width_factor)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"RandomShift: `{name}` must be a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"RandomShift: `{name}` must be in [0, 1], got {value!r}")
        self.height_factor = float(height_factor)
        self.width_factor = float(width_factor)
        self.fill_value = float(fill_value)

    def _augment(self, inputs: Any, height: int, width: int) -> Any:
        ops = _keras().ops
        batch = ops.shape(inputs)[0]
        rows = self._onehot(batch, height, self.height_factor, inputs.dtype)
        cols = self._onehot(batch, width, self.width_factor, inputs.dtype)
        x = ops.einsum("bij,bjwc->biwc", rows, inputs)
        x = ops.einsum("bij,bhjc->bhic", cols, x)
        if self.fill_value:
            inside = (
                ops.sum(rows, axis=2)[:, :, None, None] * ops.sum(cols, axis=2)[:, None, :, None]
            )
            x = x + ops.cast(self.fill_value, x.dtype) * (1 - inside)
        return x

    def _onehot(self, batch: Any, length: int, factor: float, dtype: Any) -> Any:
        """(batch, length, length): output pixel i takes source pixel i - shift, or none."""
        keras = _keras()
        ops = keras.ops
        draw = keras.random.uniform(
            (batch, 1, 1), -factor, factor, dtype="float32", seed=self._seed_generator
        )
        shift = ops.cast(ops.round(draw * length), "int32")
        source = (
            ops.arange(length, dtype="int32")[None, :, None]
            - ops.arange(length, dtype="int32")[None, None, :]
        )  # output i minus source j
        return ops.cast(ops.equal(source, shift), dtype)


class RandomErasingMask(_Augmentation):
    """Fill a random box of some images with a constant (training only).

    Args:
        factor: the erasing probability, as in Keras' `RandomErasing`: a number p means a
            probability drawn uniformly from [0, p] for each image (so p / 2 on average:
            0.5 erases a quarter of the images); a pair [a, b] draws it from [a, b].
        scale: [low, high]; the box's width and height are each `sqrt(u) * side`, with
            `u` drawn uniformly from [low, high] independently for the two (Keras' rule: the
            box area is then between `low` and `high` of the image, and its aspect ratio is
            not drawn separately).
        fill_value: the value written into the box.
        seed: for the draws; None draws from Keras' global seed.

    As Keras' layer, a box covers the pixels whose index lies in [start, start + length)
    with a real start uniform over the positions that keep it inside the image. The mask is
    built from iota comparisons and applied with one select: no per-image shapes.
    """

    _OPTIONS = ("factor", "scale", "fill_value")

    def __init__(
        self,
        factor: float | list[float] | tuple[float, float] = 0.5,
        scale: list[float] | tuple[float, float] = (0.02, 0.33),
        fill_value: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.factor = list(_unit_range("factor", factor, from_zero=True))
        self.scale = list(_unit_range("scale", scale, from_zero=False))
        self.fill_value = float(fill_value)

    def _augment(self, inputs: Any, height: int, width: int) -> Any:
        keras = _keras()
        ops = keras.ops
        batch = ops.shape(inputs)[0]
        seed = self._seed_generator
        fraction = ops.sqrt(
            keras.random.uniform((batch, 2), self.scale[0], self.scale[1], seed=seed)
        )
        rows = self._span(batch, height, fraction[:, 1])[:, :, None, None]
        cols = self._span(batch, width, fraction[:, 0])[:, None, :, None]
        # the per-image probability drawn from `factor`, then the coin, as in Keras
        chance = keras.random.uniform((batch,), self.factor[0], self.factor[1], seed=seed)
        erase = keras.random.uniform((batch,), seed=seed) < chance
        box = ops.logical_and(ops.logical_and(rows, cols), erase[:, None, None, None])
        return ops.where(box, ops.cast(self.fill_value, inputs.dtype), inputs)

    def _span(self, batch: Any, length: int, fraction: Any) -> Any:
        """(batch, length) booleans: which pixels along one axis the box covers."""
        keras = _keras()
        ops = keras.ops
        size = fraction * length
        start = keras.random.uniform((batch,), seed=self._seed_generator) * (length - size)
        index = ops.arange(length, dtype="float32")[None, :]
        return ops.logical_and(index >= start[:, None], index < (start + size)[:, None])


LAYERS: tuple[type[LazyKerasClass], ...] = (
    RandomCanvas,
    RandomHorizontalFlip,
    RandomShift,
    RandomErasingMask,
)
"""cnnlab's own layers, as architecture files name them."""


def _unit_range(name: str, value: Any, from_zero: bool) -> tuple[float, float]:
    """A [low, high] range inside [0, 1]; one number p means [0, p] when `from_zero`."""
    number = (int, float)
    if isinstance(value, number) and not isinstance(value, bool) and from_zero:
        low, high = 0.0, float(value)
    elif (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
    ):
        low, high = sorted(float(v) for v in value)
    else:
        shape = "a number or a pair [low, high]" if from_zero else "a pair [low, high]"
        raise ValueError(f"RandomErasingMask: `{name}` must be {shape}, got {value!r}")
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"RandomErasingMask: `{name}` must lie in [0, 1], got {value!r}")
    return low, high
