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

from cnnlab.errors import RunError
from cnnlab.inference import DEFAULT_SIZE, Predictor

ONNX_FILE = "model.onnx"


def onnx_path(path: str | Path) -> Path:
    """The .onnx file meant by `path`: the file itself, or RUN/model.onnx for a run folder."""
    path = Path(path)
    return path / ONNX_FILE if path.is_dir() else path


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def load_predictor(path: str | Path, *, onnx: bool = False) -> Predictor:
    """A Predictor for a run folder or .keras file, or an OnnxPredictor for an .onnx file
    (or for a run folder's model.onnx when `onnx` is true)."""
    if onnx or is_onnx(path):
        return OnnxPredictor.load(onnx_path(path))
    return Predictor.load(path)


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
        shape = tuple(v if isinstance(v, int) else None for v in model_input.shape[1:])
        self.input_shape = shape
        height, width = shape[0] or DEFAULT_SIZE[0], shape[1] or DEFAULT_SIZE[1]
        self.size = (int(height), int(width))
        self.channels = int(shape[-1] or 1)
        outputs = session.get_outputs()[0].shape
        n_classes = outputs[-1] if isinstance(outputs[-1], int) else None
        if class_names:
            names = list(class_names)
        elif n_classes:
            names = [str(i) for i in range(n_classes)]
        else:
            raise RunError("the ONNX model's number of classes is unknown; give class names")
        if n_classes and len(names) != n_classes:
            raise RunError(
                f"the model has {n_classes} outputs but {len(names)} class names were given"
            )
        self.class_names = names

    @classmethod
    def load(cls, path: str | Path) -> OnnxPredictor:
        """Open an .onnx file; class names from its sidecar `<file>.json` if there is one."""
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

    def _forward(self, batch: NDArray[np.float32]) -> NDArray[Any]:
        return self.probabilities(batch)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The metadata `cnnlab export` wrote beside an exported file, or {} if none is readable."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
