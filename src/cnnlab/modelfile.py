"""Opening a model file the user gives: a run folder or a `.keras` file, loaded safely.

A `.keras` file can hold Python code (a `Lambda` layer stores its function as bytecode), and
loading it runs that code. Keras' safe mode refuses such files; cnnlab keeps it on, says what
the risk is, and lets the user load a file they trust with `unsafe=True` (`--unsafe`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab._backend import keras as _keras
from cnnlab.errors import RunError

if TYPE_CHECKING:
    import keras

__all__ = ["MODEL_FILE", "UnsafeModelError", "load_model"]

MODEL_FILE = "model.keras"  # the same name as cnnlab.training.MODEL_FILE (a test checks)


class UnsafeModelError(RunError):
    """A model file holds code that loading it would run; refused unless the user trusts it."""


def load_model(path: str | Path, *, unsafe: bool = False) -> keras.Model:
    """Load the model of a run folder, or a `.keras` file, with a clear error if it is unusable.

    Keras' safe mode stays on unless `unsafe` is True: a file whose layers hold Python code
    (a `Lambda` layer) is refused with an `UnsafeModelError` instead of running that code.
    """
    path = Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        hint = "train it first with `cnnlab train`" if path.is_dir() else "check the path"
        raise RunError(f"{model_path}: no model found; {hint}")
    keras = _keras()
    try:
        return keras.saving.load_model(model_path, safe_mode=not unsafe)
    except Exception as exc:  # Keras raises many types for a damaged archive
        message = " ".join(str(exc).split())
        if not unsafe and "safe_mode" in message:
            raise UnsafeModelError(
                f"{model_path}: refused: the file holds Python code (e.g. a Lambda layer), and "
                "loading it would run that code with your permissions; if you trust where the "
                "file came from, load it with --unsafe (Python: unsafe=True). "
                f"Keras says: {message}"
            ) from None
        raise RunError(
            f"{model_path}: cannot load the model ({type(exc).__name__}: {message})"
        ) from None
