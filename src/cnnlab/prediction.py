"""What every predictor shares, whatever runs the model: images in, ranked classes out.

`Predictor` is the backend-neutral base: it turns pictures into model inputs
(`cnnlab.preprocess`), asks its subclass for class probabilities, and ranks them. Its two
siblings run the model: `cnnlab.inference.KerasPredictor` (Keras, any backend) and
`cnnlab.lite.OnnxPredictor` (ONNX Runtime, no TensorFlow). `cnnlab.inference.load_predictor`
picks one for a path. A bad picture gives an error for that picture only; the others are still
predicted.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError, ImageError
from cnnlab.images import describe_source
from cnnlab.preprocess import MODEL_SIZE, Box

__all__ = ["Outcome", "Prediction", "Predictor", "checked_class_names"]

Outcome = Box | str | None
"""What preparing one picture gave: the box where its object was found, its error, or None
(a model-ready array, or a picture where nothing stood out)."""


@dataclass
class Prediction:
    """The result for one picture: top-k (class, probability) pairs, or the error it caused."""

    source: str
    top: list[tuple[str, float]] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None
    box: Box | None = None
    """Where the object was found, (left, top, right, bottom) in the picture's pixels."""

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"source": self.source, "error": self.error}
        return {
            "source": self.source,
            "label": self.label,
            "top": [{"class": c, "probability": p} for c, p in self.top],
            "box": None if self.box is None else list(self.box),
        }


class Predictor(abc.ABC):
    """A loaded model with its class names and input size: load once, predict many times.

    A subclass sets `backend`, `name` and `parameters`, calls `_describe` with the model's input
    shape and class names, and implements `_forward`.
    """

    backend: str = ""
    name: str = "model"
    parameters: int | None = None
    input_shape: tuple[int | None, ...]
    size: tuple[int, int]
    channels: int
    class_names: list[str]

    def _describe(
        self,
        input_shape: tuple[int | None, ...],
        class_names: Sequence[str] | None,
        n_classes: int | None,
    ) -> None:
        """Record the (H, W, C) input (an open height or width is fed at 28x28) and the
        class names (checked against the number of outputs)."""
        self.input_shape = input_shape
        height, width = input_shape[0] or MODEL_SIZE[0], input_shape[1] or MODEL_SIZE[1]
        self.size = (int(height), int(width))
        self.channels = int(input_shape[-1] or 1)
        self.class_names = checked_class_names(class_names, n_classes)

    @abc.abstractmethod
    def _forward(self, batch: NDArray[np.float32]) -> Any:
        """The model's output (class probabilities) for a non-empty batch of inputs."""

    @property
    def any_input_size(self) -> bool:
        """True for a fully convolutional model, whose height and width are left open."""
        return self.input_shape[0] is None and self.input_shape[1] is None

    def prepare(self, images: Iterable[Any]) -> tuple[NDArray[np.float32], list[str | None]]:
        """Model inputs for the images that could be read, and an error (or None) per image:
        one (height, width, channels) input each, the found box's (see `prepare_boxed`)."""
        batch, outcomes = self.prepare_boxed(images)
        return batch[:, 0], [o if isinstance(o, str) else None for o in outcomes]

    def prepare_boxed(self, images: Iterable[Any]) -> tuple[NDArray[np.float32], list[Outcome]]:
        """Like `prepare`, with each good image's found box (or None) where its error would be,
        and every framing of each image: the batch is (N, framings, height, width, channels),
        the found box's input first (`cnnlab.preprocess.FRAMINGS`); `probabilities` averages
        over the framings.

        The one conversion every path uses (CLI, Python, the page, the API, ONNX):
        `cnnlab.preprocess.prepare_many`.
        """
        from cnnlab.preprocess import prepare_many

        batch, outcomes = prepare_many(list(images), size=self.size, framings=True)
        return self._with_channels(batch), [
            str(o) if isinstance(o, ImageError) else o.box for o in outcomes
        ]

    def probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities for a batch of model inputs, one row per input.

        A batch from `prepare_boxed` holds several framings of each image, (N, framings, H, W,
        C): its row is the mean of their probabilities, as test-time augmentation does.
        """
        if not len(batch):
            return np.zeros((0, len(self.class_names)))
        if batch.ndim == 5:
            count, framings = batch.shape[:2]
            flat = np.asarray(self._forward(batch.reshape(count * framings, *batch.shape[2:])))
            return flat.astype(np.float64).reshape(count, framings, -1).mean(axis=1)
        return np.asarray(self._forward(batch), dtype=np.float64)

    def predict(
        self, images: Iterable[Any], top_k: int = 3, *, keep_size: bool = False
    ) -> list[Prediction]:
        """Top-k predictions for each image (paths, bytes, PIL images or arrays).

        With `keep_size`, a fully convolutional model sees each whole picture at its own size
        (`cnnlab.preprocess.prepare_whole_image`) instead of the trimmed object fitted to 28x28.
        """
        images = list(images)
        if keep_size:
            return self._predict_whole(images, top_k)
        batch, outcomes = self.prepare_boxed(images)
        sources = [describe_source(image) for image in images]
        return self.pair(sources, outcomes, self.probabilities(batch), top_k)

    def pair(
        self,
        sources: Sequence[str],
        outcomes: Sequence[Outcome],
        probabilities: NDArray[np.float64],
        top_k: int = 3,
    ) -> list[Prediction]:
        """One Prediction per image from `prepare_boxed`'s outcomes: its error, or its ranked
        row of `probabilities` (rows only for the good images, in order) and its box."""
        rows = iter(probabilities)
        results = []
        for source, outcome in zip(sources, outcomes, strict=True):
            if isinstance(outcome, str):
                results.append(Prediction(source, error=outcome))
                continue
            prediction = self.rank(next(rows), source, top_k)
            prediction.box = outcome
            results.append(prediction)
        return results

    def rank(self, probabilities: NDArray[np.float64], source: str, top_k: int = 3) -> Prediction:
        """A Prediction holding the `top_k` most probable classes of one probability row."""
        probs = np.asarray(probabilities, dtype=np.float64)
        order = np.argsort(-probs)[: max(1, top_k)]
        top = [(self.class_names[i], float(probs[i])) for i in order]
        return Prediction(source, top=top, probabilities=probs.tolist())

    def check_keep_size(self) -> None:
        """Raise CnnlabError (one line) unless this model takes images at their own size."""
        if not self.any_input_size:
            height, width = self.size
            raise CnnlabError(
                f"this model takes {width}x{height} images only, so it cannot keep an image's "
                "size; leave that option out, or train a fully convolutional model "
                "(cnnlab train --preset fcn)"
            )

    def prepare_whole(self, image: Any) -> NDArray[np.float32]:
        """One whole picture as model input at its own size, (H, W, C); ImageError if unusable."""
        from cnnlab.preprocess import prepare_whole_image

        array = prepare_whole_image(image, min_size=MODEL_SIZE).array
        return self._with_channels(array[np.newaxis])[0]

    def _predict_whole(self, images: list[Any], top_k: int) -> list[Prediction]:
        self.check_keep_size()
        results = []
        for image in images:  # one forward pass each: the sizes differ
            source = describe_source(image)
            try:
                array = self.prepare_whole(image)
            except ImageError as exc:
                results.append(Prediction(source, error=str(exc)))
                continue
            results.append(self.rank(self.probabilities(array[np.newaxis])[0], source, top_k))
        return results

    def _with_channels(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """A grayscale batch repeated to the model's channels (an RGB model takes grey as RGB)."""
        if self.channels != 1 and len(batch):
            return np.repeat(batch, self.channels, axis=-1)
        return batch


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
