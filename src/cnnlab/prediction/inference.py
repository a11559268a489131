"""Use a trained CNN on new images ("using a CNN"): any picture in, top-k classes out.

`load_predictor` opens what a user points at (a run folder, a `.keras` or an `.onnx` file) as the
right `cnnlab.prediction.predictor.Predictor`: `KerasPredictor` here, or
`cnnlab.prediction.lite.OnnxPredictor` on ONNX Runtime. Both predict through the base class's one
flow (`Predictor.predict`); `KerasPredictor.features` adds the feature maps the web page shows.
Each gets the run's input recipe (`Run.input_recipe`): a folder-trained model's pictures are
prepared as its training images were, a Fashion-MNIST-like model's with the garment recipe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.calibration import UnsureRule
from cnnlab.errors import CnnlabError, ImageError, RunError
from cnnlab.prediction.predictor import Features, Prediction, Predictor, Prepared
from cnnlab.runs import Run

if TYPE_CHECKING:
    import keras

    from cnnlab.data.folders import Recipe
    from cnnlab.prediction.arithmetic import CellArithmetic

__all__ = ["KerasPredictor", "Prediction", "Predictor", "load_predictor", "predict"]


class KerasPredictor(Predictor):
    """A Keras model (any Keras backend) as a Predictor."""

    backend = "keras"

    def __init__(
        self,
        model: keras.Model,
        class_names: Sequence[str] | None = None,
        *,
        recipe: Recipe | None = None,
    ) -> None:
        """`recipe`: how pictures become inputs (None: the garment recipe); see `Predictor`."""
        from cnnlab.model.heads import with_logits

        self.model = model
        self.with_logits = with_logits(model)
        """The model with its logits as a second output (the unsure rule's energy), or None
        where its last layer is no softmax that can be undone."""
        self.name = str(model.name)
        self.parameters = int(model.count_params())
        super().__init__(
            tuple(model.input_shape)[1:],
            class_names,
            int(model.output_shape[-1]),
            recipe=recipe,
        )

    @classmethod
    def load(cls, path: str | Path | Run, *, unsafe: bool = False) -> KerasPredictor:
        """A run folder's model, or a .keras file with class names and input recipe from a
        run.json beside it (`unsafe`: load a model file that holds Python code; see
        `Run.load_model`). A `Run` already opened is used as it is."""
        run = path if isinstance(path, Run) else Run.open(path)
        recipe = run.input_recipe()  # a bad recipe fails before the model is loaded
        model = run.load_model(unsafe=unsafe)
        try:
            return cls(model, run.class_names(), recipe=recipe)
        except RunError:
            raise
        except CnnlabError as exc:  # class names or recipe that do not fit the model
            raise RunError(f"{run.state_file}: {exc}") from None

    def _forward(self, batch: NDArray[np.float32]) -> Any:
        # predict_on_batch skips predict()'s dataset machinery: ~1 ms instead of ~40 ms.
        if self.with_logits is None:
            return self.model.predict_on_batch(batch)
        probabilities, logits = self.with_logits.predict_on_batch(batch)
        return probabilities, logits

    def features(
        self,
        image: Any,
        top_k: int = 3,
        *,
        keep_size: bool = False,
        source: str | None = None,
    ) -> Features:
        """The prediction for one image, the model input it gave (the found box's, with the
        garment recipe), and every conv and pooling layer's output for that input; `ImageError`
        if the picture is unusable."""
        from cnnlab.visualize.features import feature_maps

        prepared = self._prepare_one(image, keep_size, source)
        (prediction,) = self._predict_prepared([prepared], top_k)
        kinds = {layer.name: type(layer).__name__ for layer in self.model.layers}
        with self.model_lock:
            maps = feature_maps(self.model, prepared.model_input)
        return Features(
            prediction,
            prepared.model_input,
            [(name, kinds.get(name, "?"), values) for name, values in maps],
        )

    def _prepare_one(self, image: Any, keep_size: bool, source: str | None) -> Prepared:
        """One picture prepared as `predict` prepares it; ImageError if it is unusable."""
        (prepared,) = self.prepare(
            [image], keep_size=keep_size, sources=None if source is None else [source]
        )
        if prepared.error is not None:
            raise ImageError(prepared.error)
        return prepared

    def explain_cell(
        self,
        image: Any,
        layer: str,
        row: int,
        col: int,
        channel: int,
        *,
        keep_size: bool = False,
        source: str | None = None,
    ) -> CellArithmetic:
        """The arithmetic of one cell of `layer`'s feature map for one image, from the same
        model input `features` shows (`cnnlab.prediction.arithmetic.explain_cell`); ImageError
        if the picture is unusable, CnnlabError for a layer or position that cannot be
        explained."""
        from cnnlab.prediction.arithmetic import explain_cell

        prepared = self._prepare_one(image, keep_size, source)
        with self.model_lock:
            return explain_cell(self.model, prepared.model_input, layer, row, col, channel)


def load_predictor(
    path: str | Path | Run, *, onnx: bool = False, unsafe: bool = False
) -> Predictor:
    """The Predictor for `path`: ONNX Runtime for an `.onnx` file (or, with `onnx`, for a run
    folder's `model.onnx`), Keras for a run folder or a `.keras` file (`unsafe`: see
    `Run.load_model`). The run is opened once, here (or given already open). Either way the
    predictor prepares pictures with the run's input recipe (`Run.input_recipe`), and marks
    unsure answers by the rule the run's metrics.json holds (`cnnlab.calibration.UnsureRule`),
    once `cnnlab evaluate` has fitted it."""
    run = path if isinstance(path, Run) else Run.open(path)
    predictor: Predictor
    if onnx or run.is_onnx:
        from cnnlab.prediction.lite import OnnxPredictor

        predictor = OnnxPredictor.load(run.onnx_file, fallback_recipe=run.input_recipe())
    else:
        predictor = KerasPredictor.load(run, unsafe=unsafe)
    predictor.unsure_rule = UnsureRule.from_metrics(run.metrics())
    return predictor


def predict(
    model: keras.Model | Predictor | str | Path,
    images: Iterable[Any],
    *,
    top_k: int = 3,
    class_names: Sequence[str] | None = None,
    recipe: Recipe | None = None,
) -> list[Prediction]:
    """Predict images with a model, a Predictor, or a run folder / .keras / .onnx path (a path
    brings its run's class names and recipe; a bare Keras model takes `class_names` and
    `recipe`, None being the garment recipe)."""
    if isinstance(model, (str, Path)):
        predictor = load_predictor(model)
    elif isinstance(model, Predictor):
        predictor = model
    else:
        predictor = KerasPredictor(model, class_names, recipe=recipe)
    return predictor.predict(images, top_k=top_k)
