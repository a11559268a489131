"""A light inference path: an exported `model.onnx` on ONNX Runtime, without TensorFlow or Keras.

    predictor = OnnxPredictor.load("runs/basic_cnn-fashion_mnist/model.onnx")
    predictor.predict(["shoe.jpg"])          # the same Predictions as cnnlab.inference

Import cost and install size are a fraction of TensorFlow's (see README, Export). Pictures go
through the same `cnnlab.preprocess` as the Keras path; class names come from the sidecar JSON
`cnnlab export` writes beside the file (`model.onnx.json`). Needs `pip install 'cnnlab[lite]'`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError, RunError
from cnnlab.inference import Predictor, checked_class_names

ONNX_FILE = "model.onnx"


def onnx_path(path: str | Path) -> Path:
    """The .onnx file meant by `path`: the file itself, or RUN/model.onnx for a run folder."""
    path = Path(path)
    return path / ONNX_FILE if path.is_dir() else path


def load_predictor(path: str | Path, *, onnx: bool = False, unsafe: bool = False) -> Predictor:
    """A Predictor for a run folder or .keras file, or an OnnxPredictor for an .onnx file
    (or for a run folder's model.onnx when `onnx` is true)."""
    # Predictor.load itself hands an .onnx file to OnnxPredictor.
    return OnnxPredictor.load(onnx_path(path)) if onnx else Predictor.load(path, unsafe=unsafe)


class OnnxPredictor(Predictor):
    """Predictor's interface (`predict`, `prepare`, `class_names`, `size`) on ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(
        self,
        session: Any,
        class_names: Sequence[str] | None = None,
        *,
        name: str = "model",
        parameters: int | None = None,
    ) -> None:
        # Predictor.__init__ reads a Keras model; here the session describes the model.
        self.session = session
        self.name = name
        self.parameters = parameters
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        self._set_input_shape(
            tuple(v if isinstance(v, int) else None for v in model_input.shape[1:])
        )
        outputs = session.get_outputs()[0].shape
        n_classes = outputs[-1] if isinstance(outputs[-1], int) else None
        try:
            self.class_names = checked_class_names(class_names, n_classes)
        except CnnlabError as exc:
            raise RunError(f"ONNX model: {exc}") from None

    @classmethod
    def load(cls, path: str | Path, *, unsafe: bool = False) -> OnnxPredictor:
        """Open an .onnx file; class names from its sidecar `<file>.json` if there is one.

        `unsafe` changes nothing: an ONNX graph holds no Python code to refuse.
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
        names = info.get("class_names")
        return cls(
            session,
            names if isinstance(names, list) else None,
            name=str(info.get("model_name") or path.stem),
            parameters=info.get("parameters") if isinstance(info.get("parameters"), int) else None,
        )

    def probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities for a batch of model inputs."""
        if not len(batch):
            return np.zeros((0, len(self.class_names)))
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float64)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The metadata `cnnlab export` wrote beside an exported file, or {} if none is readable."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
