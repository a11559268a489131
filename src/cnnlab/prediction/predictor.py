"""What every predictor shares, whatever runs the model: images in, ranked classes out.

`Predictor` is the backend-neutral base and holds the one prediction flow, the same for the CLI,
Python and the server: `prepare` turns each picture into a `Prepared` (its model inputs, or its
error), `probabilities` runs the model on them under the predictor's lock, and each image's rows
are averaged and ranked into a `Prediction`. How a picture becomes an input is the predictor's
`recipe`: a model trained on a folder of images gets the recipe its run recorded
(`cnnlab.data.folders.Recipe`: colour, size, resize mode; one input per picture, decoded exactly
as the training images were), and None is the garment recipe of Fashion-MNIST-like models
(`cnnlab.prediction.preprocess`: the object found, negated if dark, one input per framing of its
box). A bad picture gives an error for that picture only; the others are still predicted.
Its two siblings run the model: `cnnlab.prediction.inference.KerasPredictor` (Keras, any backend;
also `features`, the feature maps the page shows) and `cnnlab.prediction.lite.OnnxPredictor` (ONNX
Runtime, no TensorFlow). `cnnlab.prediction.inference.load_predictor` picks one for a path.

A predictor may be used from several threads at once (`cnnlab serve` does): only the model
call holds the lock; preparing pictures runs in parallel (see `cnnlab.serve.service`).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.data.images import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    check_array,
    check_pixels,
    describe_source,
    load_image,
)
from cnnlab.errors import CnnlabError, ImageError
from cnnlab.prediction.preprocess import MODEL_SIZE, Box

if TYPE_CHECKING:
    from cnnlab.calibration import UnsureRule
    from cnnlab.data.folders import Recipe

__all__ = ["Features", "Prediction", "Predictor", "Prepared", "checked_class_names"]


@dataclass(frozen=True, eq=False)  # arrays: compare their fields, not the objects
class Prepared:
    """One picture ready for the model, made once per image: its inputs, or its error.

    `inputs` is (framings, height, width, channels): the found box's input first, then its
    re-framings (`cnnlab.prediction.preprocess.FRAMINGS`); one framing for a model-ready array, a
    blank picture, a whole picture kept at its own size, or any picture of a folder recipe. `box`
    is where the object was found, (left, top, right, bottom) in the picture's pixels, or None
    (always None with a folder recipe: nothing is looked for).
    """

    source: str
    inputs: NDArray[np.float32] | None = None
    box: Box | None = None
    error: str | None = None

    @property
    def blank(self) -> bool:
        """True when the model sees nothing but black: nothing stood out in the picture."""
        return self.inputs is not None and not self.inputs.any()

    @property
    def model_input(self) -> NDArray[np.float32]:
        """The found box's input, (height, width, channels): what the page shows."""
        if self.inputs is None:
            raise ImageError(self.error or f"{self.source}: not prepared")
        return self.inputs[0]


@dataclass
class Prediction:
    """The result for one picture: top-k (class, probability) pairs, or the error it caused."""

    source: str
    top: list[tuple[str, float]] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None
    box: Box | None = None
    """Where the object was found, (left, top, right, bottom) in the picture's pixels."""
    blank: bool = False
    """Nothing stood out from the background: the model saw only black."""
    unsure: bool | None = None
    """The answer is beyond the threshold `cnnlab evaluate` chose on validation data (its
    energy, or its confidence where the logits are unknown: `cnnlab.calibration.UnsureRule`):
    maybe not one of the model's classes. None where the run has no such rule (not
    evaluated)."""

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"source": self.source, "error": self.error}
        result: dict[str, Any] = {
            "source": self.source,
            "label": self.label,
            "top": [{"class": c, "probability": p} for c, p in self.top],
            "box": None if self.box is None else list(self.box),
        }
        if self.unsure is not None:
            result["unsure"] = self.unsure
        return result


@dataclass(frozen=True, eq=False)
class Features:
    """One picture's prediction, the model input its found box gave, and what every conv and
    pooling layer made of that input: (layer name, Keras layer class, maps (H, W, channels))."""

    prediction: Prediction
    model_input: NDArray[np.float32]
    layers: list[tuple[str, str, NDArray[np.float32]]]


class Predictor(abc.ABC):
    """A loaded model with its class names and input size: load once, predict many times.

    A subclass sets `backend`, `name` and `parameters`, calls `Predictor.__init__` with the
    model's input shape, class names and recipe, and implements `_forward`.
    """

    backend: str = ""
    name: str = "model"
    parameters: int | None = None

    def __init__(
        self,
        input_shape: tuple[int | None, ...],
        class_names: Sequence[str] | None,
        n_classes: int | None,
        *,
        recipe: Recipe | None = None,
    ) -> None:
        """Record the (H, W, C) input (an open height or width is fed at the recipe's size, or
        28x28), the class names (checked against the number of outputs) and the recipe that
        makes a picture into an input (None: the garment recipe; checked against the input)."""
        self.input_shape = input_shape
        self.recipe = recipe
        default = recipe.size if recipe is not None else MODEL_SIZE
        height, width = input_shape[0] or default[0], input_shape[1] or default[1]
        self.size = (int(height), int(width))
        self.channels = int(input_shape[-1] or (recipe.channels if recipe is not None else 1))
        if recipe is not None:
            _check_recipe(recipe, self.size, self.channels)
        self.class_names = checked_class_names(class_names, n_classes)
        self.unsure_rule: UnsureRule | None = None
        """Marks each answer `Prediction.unsure` where set (`load_predictor` reads it from
        the run's metrics.json); None: answers are not marked."""
        self.model_lock = threading.Lock()
        """Held around every model call: Keras does not promise that one model may be called
        from several threads at once. Hold it for any other use of the model from threads."""

    @abc.abstractmethod
    def _forward(self, batch: NDArray[np.float32]) -> Any:
        """The model's output for a non-empty batch of inputs: the class probabilities, or
        (probabilities, logits) where the predictor knows the logits too (the unsure rule's
        energy needs them)."""

    def _outputs(
        self, batch: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """`_forward` under `model_lock`, as float64 (probabilities, logits or None)."""
        with self.model_lock:
            output = self._forward(batch)
        if isinstance(output, (tuple, list)):
            probabilities, logits = output
            return np.asarray(probabilities, np.float64), np.asarray(logits, np.float64)
        return np.asarray(output, dtype=np.float64), None

    @property
    def any_input_size(self) -> bool:
        """True for a fully convolutional model, whose height and width are left open."""
        return self.input_shape[0] is None and self.input_shape[1] is None

    def input_info(self) -> dict[str, Any]:
        """How pictures become this model's input, for people and clients (`/api/model`):
        `kind` "folder" (the run's recipe: size, color, resize) or "garment" (the object is
        found, cropped and fitted light-on-dark in grey: no resize mode)."""
        if self.recipe is not None:
            return {"kind": "folder", **self.recipe.to_dict()}
        return {"kind": "garment", "size": list(self.size), "color": "grayscale", "resize": None}

    # --- The flow: prepare, run the model, rank -----------------------------------------------

    def predict(
        self,
        images: Iterable[Any],
        top_k: int = 3,
        *,
        keep_size: bool = False,
        sources: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """Top-k predictions for each image (paths, bytes, file objects, PIL images or arrays).

        With `keep_size`, a fully convolutional model sees each whole picture at its own size
        (`cnnlab.prediction.preprocess.prepare_whole_image`) instead of the trimmed object fitted to
        its input size. `sources` names the images in the results and errors (default: the path, or
        the kind of object). `top_k` is at most the number of classes.
        """
        return self._predict_prepared(
            self.prepare(images, keep_size=keep_size, sources=sources), top_k
        )

    def prepare(
        self,
        images: Iterable[Any],
        *,
        keep_size: bool = False,
        sources: Sequence[str] | None = None,
    ) -> list[Prepared]:
        """Each image as model inputs (every framing, the model's channels), or its error.

        The one conversion every path uses (CLI, Python, the page, the API, ONNX): the
        predictor's folder `recipe` (`recipe_input`), else the garment recipe,
        `cnnlab.prediction.preprocess.prepare_image`, or `prepare_whole_image` with `keep_size`
        (then CnnlabError, before any image is read, unless this model takes any size).
        """
        from cnnlab.prediction.preprocess import prepare_image, prepare_whole_image

        images = list(images)
        if keep_size:
            self.check_keep_size()
        names = [describe_source(image) for image in images] if sources is None else sources
        prepared = []
        for image, source in zip(images, names, strict=True):
            try:
                if self.recipe is not None:
                    array = self.recipe_input(image, source, keep_size=keep_size)
                    prepared.append(Prepared(source, array[np.newaxis]))
                elif keep_size:  # the whole picture: no box was cut out of it
                    picture = prepare_whole_image(image, min_size=MODEL_SIZE, name=source)
                    prepared.append(Prepared(source, self._with_channels(picture.inputs)))
                else:
                    picture = prepare_image(image, self.size, name=source)
                    inputs = self._with_channels(picture.inputs)
                    prepared.append(Prepared(source, inputs, picture.box))
            except ImageError as exc:
                prepared.append(Prepared(source, error=str(exc)))
        return prepared

    def recipe_input(
        self, image: Any, source: str | None = None, *, keep_size: bool = False
    ) -> NDArray[np.float32]:
        """One picture through the folder recipe: float32 (H, W, C) in [0, 1], exactly as the
        training images were made; ImageError (naming `source`) if it is unusable.

        A path, bytes or binary file goes through `Recipe.load`, the decoder the training
        stream uses; a PIL image through `Recipe.pixels` (as `Recipe.apply`); an array already
        at the model's (H, W, C) is taken as it is (checked, uint8 scaled to [0, 1]), any
        other array is made a picture first. With `keep_size` (a model that takes any size)
        the upright picture keeps its own size and only its colour is converted.
        """
        from PIL import Image

        from cnnlab.data.folders import Recipe, scale

        recipe = self.recipe
        if recipe is None:
            raise CnnlabError("this predictor uses the garment recipe; it has no folder recipe")
        name = describe_source(image) if source is None else source
        height, width = self.size
        model_ready = ((height, width, self.channels),) + (
            ((height, width),) if self.channels == 1 else ()
        )
        if isinstance(image, np.ndarray) and not keep_size and image.shape in model_ready:
            check_array(image, name, MAX_PIXELS)
            ready = image.astype(np.float32).reshape(height, width, self.channels)
            return ready / np.float32(255) if image.dtype.kind in "ui" else ready
        if keep_size or isinstance(image, np.ndarray):
            from cnnlab.prediction.preprocess import MAX_KEEP_SIZE_EDGE, check_whole_size

            picture = load_image(image, name=name)  # checked, decoded, upright
            if keep_size:
                edges = picture.height, picture.width
                check_whole_size(*edges, name, MODEL_SIZE, MAX_KEEP_SIZE_EDGE)
                recipe = Recipe(edges, recipe.color, "squash")
            return scale(recipe.pixels(picture, name=name))
        if isinstance(image, Image.Image):
            check_pixels(image.width, image.height, name, MAX_PIXELS)
            return scale(recipe.pixels(image, name=name))
        return scale(_recipe_load(recipe, image, name))

    def probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities for a batch of model inputs, one row per input.

        A batch of framed inputs, (N, framings, H, W, C), gives one row per image: the mean of
        its framings' probabilities. Only the model call holds `model_lock`.
        """
        return self._rows(batch)[0]

    def _rows(
        self, batch: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """`probabilities`, and the logits of every input where known: (N, classes), or
        (N, framings, classes) for a framed batch; None where the model gives no logits."""
        if not len(batch):
            return np.zeros((0, len(self.class_names))), None
        if batch.ndim == 5:
            count, framings = batch.shape[:2]
            flat = batch.reshape(count * framings, *batch.shape[2:])
            probabilities, logits = self._outputs(flat)
            rows = probabilities.reshape(count, framings, -1).mean(axis=1)
            return rows, None if logits is None else logits.reshape(count, framings, -1)
        return self._outputs(batch)

    def _predict_prepared(self, prepared: Sequence[Prepared], top_k: int) -> list[Prediction]:
        """One Prediction per prepared image, in order: its error, or its ranked row.

        Inputs at the model's size run as one batch (a picture with fewer framings repeats
        them, which leaves its mean as it is); a picture kept at its own size runs alone.
        """
        inputs = {i: item.inputs for i, item in enumerate(prepared) if item.inputs is not None}
        fitted = {i: framed for i, framed in inputs.items() if framed.shape[1:3] == self.size}
        rows: dict[int, NDArray[np.float64]] = {}
        logits: dict[int, NDArray[np.float64] | None] = {}
        if fitted:
            count = max(len(framed) for framed in fitted.values())
            batch = np.stack([np.repeat(x, count // len(x), axis=0) for x in fitted.values()])
            probabilities, framed_logits = self._rows(batch)
            for place, index in enumerate(fitted):
                rows[index] = probabilities[place]
                logits[index] = None if framed_logits is None else framed_logits[place]
        for index, framed in inputs.items():
            if index not in rows:  # kept at its own size: one forward pass each
                probabilities, framed_logits = self._rows(framed[np.newaxis])
                rows[index] = probabilities[0]
                logits[index] = None if framed_logits is None else framed_logits[0]
        return [
            self._ranked(rows[index], item, top_k, logits[index])
            if index in rows
            else Prediction(item.source, error=item.error or f"{item.source}: not prepared")
            for index, item in enumerate(prepared)
        ]

    def _ranked(
        self,
        probabilities: NDArray[np.float64],
        item: Prepared,
        top_k: int,
        logits: NDArray[np.float64] | None = None,
    ) -> Prediction:
        """A Prediction holding the `top_k` (1 up to the number of classes) most probable
        classes of one probability row, marked unsure by the rule (with the logits of the
        picture's framings where known)."""
        probs = np.asarray(probabilities, dtype=np.float64)
        order = np.argsort(-probs)[: max(1, min(top_k, len(self.class_names)))]
        top = [(self.class_names[i], float(probs[i])) for i in order]
        rule = self.unsure_rule
        return Prediction(
            item.source,
            top=top,
            probabilities=probs.tolist(),
            box=item.box,
            blank=item.blank,
            unsure=None if rule is None else rule.is_unsure(probs, logits),
        )

    def check_keep_size(self) -> None:
        """Raise CnnlabError (one line) unless this model takes images at their own size."""
        if not self.any_input_size:
            height, width = self.size
            if self.recipe is not None:
                raise CnnlabError(
                    f"this model takes {width}x{height} images only (its training recipe "
                    f"resizes every picture to that size: {self.recipe.resize}), so it cannot "
                    "keep an image's size; leave that option out"
                )
            raise CnnlabError(
                f"this model takes {width}x{height} images only, so it cannot keep an image's "
                "size; leave that option out, or train a fully convolutional model "
                "(cnnlab train --preset fcn)"
            )

    def _with_channels(self, inputs: NDArray[np.float32]) -> NDArray[np.float32]:
        """Grayscale inputs repeated to the model's channels (an RGB model takes grey as RGB)."""
        if self.channels != 1 and len(inputs):
            return np.repeat(inputs, self.channels, axis=-1)
        return inputs


def _check_recipe(recipe: Recipe, size: tuple[int, int], channels: int) -> None:
    """CnnlabError unless the recipe makes inputs of the model's size and channels."""
    if (*size, channels) != recipe.input_shape:
        height, width = recipe.size
        raise CnnlabError(
            f"the input recipe ({width}x{height} {recipe.color}, {recipe.resize}) does not "
            f"make the model's input ({size[1]}x{size[0]}x{channels}); give the recipe its "
            "run recorded (run.json's input_recipe), or train the run again"
        )


def _recipe_load(recipe: Recipe, image: Any, name: str) -> NDArray[np.uint8]:
    """`Recipe.load` (the training stream's decoder) with errors that call the picture `name`."""
    import io
    import os

    if isinstance(image, (bytes, bytearray, memoryview)):
        buffer = io.BytesIO(bytes(image))
        buffer.name = name  # Recipe.load names a picture by its file object's name
        image = buffer
    elif isinstance(image, (str, os.PathLike)) and os.path.isdir(image):
        raise ImageError(f"{name}: is a directory, not an image file; pass an image file")
    elif isinstance(image, (str, os.PathLike)) and os.path.isfile(image):
        if os.path.getsize(image) > MAX_FILE_BYTES:  # the limit the garment path's reader has
            raise ImageError(
                f"{name}: the file is over the {MAX_FILE_BYTES:,}-byte limit; "
                "recompress or downscale it"
            )
    elif not isinstance(image, (str, os.PathLike)) and not hasattr(image, "read"):
        raise ImageError(
            f"{name}: not an image source; pass a path, bytes, a binary file, "
            "a PIL image or a numpy array"
        )
    try:
        return recipe.load(image)
    except ImageError as exc:
        message, own = str(exc), describe_source(image)
        if own != name and message.startswith(f"{own}: "):
            message = f"{name}: {message[len(own) + 2 :]}"
        raise ImageError(message) from None


def checked_class_names(class_names: Sequence[str] | None, n_classes: int | None) -> list[str]:
    """The class names for a model with `n_classes` outputs ("0", "1"... when none are given)."""
    if not class_names:
        if not n_classes:
            raise CnnlabError("the model's number of classes is unknown; give class names")
        return [str(i) for i in range(n_classes)]
    names = list(class_names)
    if n_classes and len(names) != n_classes:
        raise CnnlabError(
            f"the model has {n_classes} outputs but {len(names)} class names were given"
        )
    return names
