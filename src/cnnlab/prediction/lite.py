"""A light inference path: an exported `model.onnx` on ONNX Runtime, without TensorFlow or Keras.

    predictor = OnnxPredictor.load("runs/basic_cnn-fashion_mnist/model.onnx")
    predictor.predict(["shoe.jpg"])          # the same Predictions as KerasPredictor

Import cost and install size are a fraction of TensorFlow's (see docs/export.md). Pictures go
through the same flow as the Keras path (`cnnlab.prediction.predictor.Predictor.predict`); class
names and the input recipe of a folder-trained model come from the sidecar JSON `cnnlab export`
writes beside the file (`model.onnx.json`), so ONNX and Keras see the same inputs. Needs
`pip install 'cnnlab[lite]'`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError, ConfigError, RunError
from cnnlab.prediction.predictor import Predictor
from cnnlab.runs import read_sidecar, sidecar_class_names, sidecar_path

if TYPE_CHECKING:
    from cnnlab.data.folders import Recipe


class OnnxPredictor(Predictor):
    """An exported ONNX model on ONNX Runtime as a Predictor."""

    backend = "onnxruntime"

    def __init__(
        self,
        session: Any,
        class_names: Sequence[str] | None = None,
        *,
        name: str = "model",
        parameters: int | None = None,
        recipe: Recipe | None = None,
    ) -> None:
        """`recipe`: how pictures become inputs (None: the garment recipe); see `Predictor`."""
        self.session = session
        self.name = name
        self.parameters = parameters
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        shape = tuple(v if isinstance(v, int) else None for v in model_input.shape[1:])
        outputs = session.get_outputs()
        n_classes = outputs[0].shape[-1] if isinstance(outputs[0].shape[-1], int) else None
        self.gives_logits = len(outputs) == 2 and outputs[1].shape[-1] == outputs[0].shape[-1]
        """Whether the file has the logits as its second output (`cnnlab export` writes them
        since the unsure rule's energy needs them; an older export has probabilities only)."""
        try:
            super().__init__(shape, class_names, n_classes, recipe=recipe)
        except CnnlabError as exc:
            raise RunError(f"ONNX model: {exc}") from None

    @classmethod
    def load(cls, path: str | Path, *, fallback_recipe: Recipe | None = None) -> OnnxPredictor:
        """Open an .onnx file; class names and input recipe from its sidecar `<file>.json` if
        there is one (`fallback_recipe`: the recipe where the sidecar records none, e.g. the
        run's, for a file exported before sidecars held it).

        (An ONNX graph holds no Python code, so there is nothing for `unsafe` to allow.)
        """
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunError(
                "running an ONNX model needs onnxruntime; install it with "
                "`pip install 'cnnlab[lite]'`"
            ) from None
        path = Path(path)
        if not path.is_file():
            raise RunError(
                f"{path}: no ONNX model found; write one with `cnnlab export RUN --format onnx`"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(f"{path}: not a usable ONNX model ({first})") from exc
        info = read_sidecar(path)
        return cls(
            session,
            sidecar_class_names(info),
            name=str(info.get("model_name") or path.stem),
            parameters=info.get("parameters") if isinstance(info.get("parameters"), int) else None,
            recipe=_sidecar_recipe(path, info) or fallback_recipe,
        )

    def _forward(self, batch: NDArray[np.float32]) -> Any:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        outputs = self.session.run(None, feed)
        return (outputs[0], outputs[1]) if self.gives_logits else outputs[0]


def _sidecar_recipe(path: Path, info: dict[str, Any]) -> Recipe | None:
    """The folder recipe an export's sidecar records, or None (the garment recipe)."""
    from cnnlab.data.folders import Recipe

    recorded = info.get("input_recipe")
    if not recorded:
        return None
    try:
        if not isinstance(recorded, dict):
            raise ConfigError(f"{recorded!r} is not an object")
        return Recipe.from_dict(recorded)
    except ConfigError as exc:
        raise RunError(
            f"{sidecar_path(path)}: unreadable input_recipe ({exc}); export the run again"
        ) from None
