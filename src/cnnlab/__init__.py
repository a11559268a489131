"""cnnlab: build, train, understand and use convolutional image classifiers (Keras 3).

The public API, re-exported lazily so that `import cnnlab` stays fast: TensorFlow and Keras
are imported only by the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "cnnlab.config",
    "load_config": "cnnlab.config",
    "CnnlabError": "cnnlab.errors",
    "load_dataset": "cnnlab.data",
    "prepare": "cnnlab.data",
    "load_architecture": "cnnlab.models",
    "build_model": "cnnlab.models",
    "train": "cnnlab.training",
    "load_model": "cnnlab.modelfile",
    "evaluate": "cnnlab.evaluation",
    "predict": "cnnlab.inference",
    "to_model_input": "cnnlab.preprocess",
    "TargetReached": "cnnlab.callbacks",
    "BestModelCheckpoint": "cnnlab.callbacks",
}

__all__ = [
    "BestModelCheckpoint",
    "CnnlabError",
    "Config",
    "TargetReached",
    "__version__",
    "build_model",
    "evaluate",
    "load_architecture",
    "load_config",
    "load_dataset",
    "load_model",
    "predict",
    "prepare",
    "to_model_input",
    "train",
]

if TYPE_CHECKING:
    from cnnlab.callbacks import BestModelCheckpoint, TargetReached
    from cnnlab.config import Config, load_config
    from cnnlab.data import load_dataset, prepare
    from cnnlab.errors import CnnlabError
    from cnnlab.evaluation import evaluate
    from cnnlab.inference import predict
    from cnnlab.modelfile import load_model
    from cnnlab.models import build_model, load_architecture
    from cnnlab.preprocess import to_model_input
    from cnnlab.training import train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
