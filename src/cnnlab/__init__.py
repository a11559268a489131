"""cnnlab: build, train, understand and use convolutional image classifiers (Keras 3).

The public API, re-exported lazily so that `import cnnlab` stays fast: TensorFlow and Keras
are imported only by the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cnnlab._version import __version__

_EXPORTS = {
    "Config": "cnnlab.config",
    "load_config": "cnnlab.config",
    "CnnlabError": "cnnlab.errors",
    "load_dataset": "cnnlab.data",
    "prepare": "cnnlab.data",
    "load_architecture": "cnnlab.model.builder",
    "build_model": "cnnlab.model.builder",
    "train": "cnnlab.training.trainer",
    "lr_find": "cnnlab.training.lr_find",
    "load_model": "cnnlab.runs",
    "evaluate": "cnnlab.evaluation",
    "predict": "cnnlab.prediction.inference",
    "load_predictor": "cnnlab.prediction.inference",
    "Predictor": "cnnlab.prediction.predictor",
    "Prediction": "cnnlab.prediction.predictor",
    "Run": "cnnlab.runs",
    "to_model_input": "cnnlab.prediction.preprocess",
    "TargetReached": "cnnlab.training.callbacks",
    "BestModelCheckpoint": "cnnlab.training.callbacks",
}

__all__ = [
    "BestModelCheckpoint",
    "CnnlabError",
    "Config",
    "Prediction",
    "Predictor",
    "Run",
    "TargetReached",
    "__version__",
    "build_model",
    "evaluate",
    "load_architecture",
    "load_config",
    "load_dataset",
    "load_model",
    "load_predictor",
    "lr_find",
    "predict",
    "prepare",
    "to_model_input",
    "train",
]

if TYPE_CHECKING:
    from cnnlab.config import Config, load_config
    from cnnlab.data import load_dataset, prepare
    from cnnlab.errors import CnnlabError
    from cnnlab.evaluation import evaluate
    from cnnlab.model.builder import build_model, load_architecture
    from cnnlab.prediction.inference import load_predictor, predict
    from cnnlab.prediction.predictor import Prediction, Predictor
    from cnnlab.prediction.preprocess import to_model_input
    from cnnlab.runs import Run, load_model
    from cnnlab.training.callbacks import BestModelCheckpoint, TargetReached
    from cnnlab.training.lr_find import lr_find
    from cnnlab.training.trainer import train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
