"""Use a trained CNN on new images ("using a CNN"): any picture in, top-k classes out.

Each picture goes through `cnnlab.preprocess.to_model_input`, which turns a photo into what the
model was trained on (see that module). A bad picture gives an error for that picture only;
the others are still predicted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import CnnlabError, ImageError

if TYPE_CHECKING:
    import keras

DEFAULT_SIZE = (28, 28)
Box = tuple[int, int, int, int]


@dataclass
class Prediction:
    """The result for one picture: top-k (class, probability) pairs, or the error it caused."""

    source: str
    top: list[tuple[str, float]] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None
    box: tuple[int, int, int, int] | None = None
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


class Predictor:
    """A loaded model with its class names and input size: load once, predict many times."""

    backend = "keras"

    def __init__(self, model: keras.Model, class_names: Sequence[str] | None = None):
        self.model = model
        self._set_input_shape(tuple(model.input_shape)[1:])
        self.class_names = checked_class_names(class_names, int(model.output_shape[-1]))

    def _set_input_shape(self, shape: tuple[int | None, ...]) -> None:
        """Record the (H, W, C) input; an open height or width is fed at the 28x28 default."""
        self.input_shape = shape
        height, width = shape[0] or DEFAULT_SIZE[0], shape[1] or DEFAULT_SIZE[1]
        self.size = (int(height), int(width))
        self.channels = int(shape[-1] or 1)

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """Load a run folder (or a .keras file, with class names from a run.json beside it).

        An .onnx file gives an `cnnlab.lite.OnnxPredictor`: ONNX Runtime, no TensorFlow.
        """
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            from cnnlab.lite import OnnxPredictor

            return OnnxPredictor.load(path)
        from cnnlab.training import STATE_FILE, load_model

        model = load_model(path)
        state_file = (path if path.is_dir() else path.parent) / STATE_FILE
        names = None
        if state_file.is_file():
            try:
                names = json.loads(state_file.read_text(encoding="utf-8")).get("class_names")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                names = None
        return cls(model, names)

    def prepare(self, images: Iterable[Any]) -> tuple[np.ndarray, list[str | None]]:
        """Model inputs for the images that could be read, and an error (or None) per image."""
        batch, outcomes = self.prepare_boxed(images)
        return batch, [o if isinstance(o, str) else None for o in outcomes]

    def prepare_boxed(self, images: Iterable[Any]) -> tuple[np.ndarray, list[Box | str | None]]:
        """Like `prepare`, with each good image's found box (or None) where its error would be.

        The one conversion every path uses (CLI, Python, the page, the API, ONNX):
        `cnnlab.preprocess.prepare_many`.
        """
        from cnnlab.preprocess import prepare_many

        batch, outcomes = prepare_many(list(images), size=self.size)
        if self.channels != 1 and len(batch):
            batch = np.repeat(batch, self.channels, axis=-1)
        return batch, [str(o) if isinstance(o, ImageError) else o.box for o in outcomes]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of model inputs (one call, no tf.data machinery)."""
        if not len(batch):
            return np.zeros((0, len(self.class_names)))
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float64)

    @property
    def any_input_size(self) -> bool:
        """True for a fully convolutional model, whose height and width are left open."""
        return self.input_shape[0] is None and self.input_shape[1] is None

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
        return self.results(sources, outcomes, self.probabilities(batch), top_k)

    def results(
        self,
        sources: Sequence[str],
        outcomes: Sequence[Box | str | None],
        probabilities: np.ndarray,
        top_k: int = 3,
    ) -> list[Prediction]:
        """One Prediction per source from `prepare_boxed`'s outcomes and the good ones' rows:
        the error, or the top-k classes and the found box."""
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

    def _predict_whole(self, images: list[Any], top_k: int) -> list[Prediction]:
        from cnnlab.preprocess import prepare_whole_image

        if not self.any_input_size:
            height, width = self.size
            raise CnnlabError(
                f"this model takes {width}x{height} images only, so it cannot keep an image's "
                "size; leave that option out, or train a fully convolutional model "
                "(cnnlab train --preset fcn)"
            )
        results = []
        for image in images:  # one forward pass each: the sizes differ
            source = describe_source(image)
            try:
                array = prepare_whole_image(image, min_size=DEFAULT_SIZE).array
            except ImageError as exc:
                results.append(Prediction(source, error=str(exc)))
                continue
            if self.channels != 1:
                array = np.repeat(array, self.channels, axis=-1)
            results.append(self.rank(self.probabilities(array[np.newaxis])[0], source, top_k))
        return results

    def rank(self, probabilities: np.ndarray, source: str, top_k: int = 3) -> Prediction:
        """A Prediction holding the `top_k` most probable classes of one probability row."""
        probs = np.asarray(probabilities, dtype=np.float64)
        order = np.argsort(-probs)[: max(1, top_k)]
        top = [(self.class_names[i], float(probs[i])) for i in order]
        return Prediction(source, top=top, probabilities=probs.tolist())


def predict(
    model: keras.Model | Predictor | str | Path,
    images: Iterable[Any],
    *,
    top_k: int = 3,
    class_names: Sequence[str] | None = None,
) -> list[Prediction]:
    """Predict images with a model, a Predictor, or a run folder / .keras path."""
    if isinstance(model, (str, Path)):
        predictor = Predictor.load(model)
    elif isinstance(model, Predictor):
        predictor = model
    else:
        predictor = Predictor(model, class_names)
    return predictor.predict(images, top_k=top_k)


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


def describe_source(image: Any) -> str:
    """A short name for an input, for messages: the path, or the kind of object."""
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(image, np.ndarray):
        return f"<array {'x'.join(map(str, image.shape))}>"
    return f"<{type(image).__name__}>"
