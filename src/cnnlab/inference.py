"""Use a trained CNN on new images ("using a CNN"): any picture in, top-k classes out.

`load_predictor` opens what a user points at (a run folder, a `.keras` or an `.onnx` file) as
the right `cnnlab.prediction.Predictor`: `KerasPredictor` here, or `cnnlab.lite.OnnxPredictor`
on ONNX Runtime. Pictures go through `cnnlab.preprocess`, the same for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.prediction import Prediction, Predictor
from cnnlab.runs import Run

if TYPE_CHECKING:
    import keras

__all__ = ["KerasPredictor", "Prediction", "Predictor", "load_predictor", "predict"]


class KerasPredictor(Predictor):
    """A Keras model (any Keras backend) as a Predictor."""

    backend = "keras"

    def __init__(self, model: keras.Model, class_names: Sequence[str] | None = None) -> None:
        self.model = model
        self.name = str(model.name)
        self.parameters = int(model.count_params())
        self._describe(tuple(model.input_shape)[1:], class_names, int(model.output_shape[-1]))

    @classmethod
    def load(cls, path: str | Path, *, unsafe: bool = False) -> KerasPredictor:
        """A run folder's model, or a .keras file with class names from a run.json beside it
        (`unsafe`: load a model file that holds Python code; see `Run.load_model`)."""
        run = Run.open(path)
        return cls(run.load_model(unsafe=unsafe), run.class_names())

    def _forward(self, batch: NDArray[np.float32]) -> Any:
        # predict_on_batch skips predict()'s dataset machinery: ~1 ms instead of ~40 ms.
        return self.model.predict_on_batch(batch)


def load_predictor(path: str | Path, *, onnx: bool = False, unsafe: bool = False) -> Predictor:
    """The Predictor for `path`: ONNX Runtime for an `.onnx` file (or, with `onnx`, for a run
    folder's `model.onnx`), Keras for a run folder or a `.keras` file (`unsafe`: see
    `Run.load_model`)."""
    run = Run.open(path)
    if onnx or run.is_onnx:
        from cnnlab.lite import OnnxPredictor

        return OnnxPredictor.load(run.onnx_file)
    return KerasPredictor.load(path, unsafe=unsafe)


def predict(
    model: keras.Model | Predictor | str | Path,
    images: Iterable[Any],
    *,
    top_k: int = 3,
    class_names: Sequence[str] | None = None,
) -> list[Prediction]:
    """Predict images with a model, a Predictor, or a run folder / .keras / .onnx path."""
    if isinstance(model, (str, Path)):
        predictor = load_predictor(model)
    elif isinstance(model, Predictor):
        predictor = model
    else:
        predictor = KerasPredictor(model, class_names)
    return predictor.predict(images, top_k=top_k)
