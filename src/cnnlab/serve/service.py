"""The model behind the web page: loaded once, shared by every request thread.

FastAPI runs blocking work in a thread pool, so several requests can reach the model at once.
Two locks keep that correct:

- `_decode_lock` around image decoding: `cnnlab.preprocess` guards against decompression bombs
  with `warnings.catch_warnings`, which swaps the process-wide warning filters and is not
  thread-safe;
- `_model_lock` around every model call: Keras does not promise that one model may be called
  from several threads at once, and on a CPU concurrent calls would only compete for the cores.

A request decodes its image while another one runs the model, so the two stages overlap.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError
from cnnlab.inference import Prediction
from cnnlab.lite import OnnxPredictor, load_predictor

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

PICTURES = ("model", "history")
"""The run pictures the page shows, drawn on first request and kept in memory."""
FEATURE_CMAP = "viridis"
MAX_FEATURE_CHANNELS = 64
"""Channels shown per layer: a wider layer shows its first 64."""
METRICS_FILE = "metrics.json"


class NeedsKeras(CnnlabError):
    """What was asked needs the Keras model (layers, feature maps), not an exported one."""


class ModelService:
    """A trained run's model, class names and pictures, safe to use from many threads."""

    def __init__(self, run: str | Path, *, top_k: int = 3, onnx: bool = False) -> None:
        path = Path(run)
        # raises RunError for a bad run; an .onnx file (or `onnx`) runs on ONNX Runtime
        self.predictor = load_predictor(path, onnx=onnx)
        self.keras = self.predictor.backend == "keras"
        self.run_dir = path if path.is_dir() else path.parent
        self.top_k = top_k
        self._decode_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._picture_lock = threading.Lock()
        self._pictures: dict[str, bytes] = {}

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    @property
    def model_name(self) -> str:
        if isinstance(self.predictor, OnnxPredictor):
            return self.predictor.name
        return str(self.predictor.model.name)

    @property
    def parameters(self) -> int | None:
        if isinstance(self.predictor, OnnxPredictor):
            return self.predictor.parameters
        return int(self.predictor.model.count_params())

    def _need_keras(self, what: str) -> None:
        if not self.keras:
            raise NeedsKeras(
                f"{what} needs the Keras model; this server runs an exported ONNX model "
                "(serve the run folder without --onnx to see them)"
            )

    # --- Predicting -------------------------------------------------------------------------

    def prepare_boxed(
        self, images: Sequence[Any]
    ) -> tuple[NDArray[np.float32], list[tuple[int, int, int, int] | str | None]]:
        """Model inputs for the images that decode, and per image its error, or the box found
        in it (None for a model-ready array or a blank picture)."""
        with self._decode_lock:
            return self.predictor.prepare_boxed(images)

    def probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities for a batch of model inputs, one row per input."""
        if not len(batch):
            return np.zeros((0, len(self.class_names)))
        with self._model_lock:
            # predict_on_batch skips predict()'s dataset machinery: ~1 ms instead of ~40 ms.
            output = self.predictor.probabilities(batch)
        return np.asarray(output, dtype=np.float64)

    def predict(
        self, images: Sequence[Any], sources: Sequence[str], top_k: int | None = None
    ) -> list[Prediction]:
        """Top-k predictions per image; an image that does not decode gets its error instead."""
        batch, outcomes = self.prepare_boxed(images)
        probabilities = self.probabilities(batch)
        return self.predictor.results(sources, outcomes, probabilities, self.clamp_top_k(top_k))

    def rank(
        self, probabilities: NDArray[np.float64], source: str, top_k: int | None = None
    ) -> Prediction:
        """A Prediction holding the `top_k` most probable classes."""
        return self.predictor.rank(probabilities, source, self.clamp_top_k(top_k))

    def clamp_top_k(self, top_k: int | None) -> int:
        """The requested top-k (or the default), at most the number of classes."""
        return max(1, min(top_k or self.top_k, len(self.class_names)))

    def feature_maps(self, image: NDArray[np.float32]) -> list[tuple[str, NDArray[np.float32]]]:
        """What every conv and pooling layer outputs for one model input."""
        self._need_keras("feature maps")
        from cnnlab.visualize.features import feature_maps

        with self._model_lock:
            return feature_maps(self.predictor.model, image)

    # --- Describing the run -----------------------------------------------------------------

    @functools.cached_property
    def summary(self) -> str:
        """The model's Keras summary as plain text."""
        if not self.keras:
            return f"{self.model_name}: an exported ONNX model; `cnnlab summary RUN` shows layers\n"
        from cnnlab.models import summary_text

        with self._model_lock:
            return summary_text(self.predictor.model)

    @functools.cached_property
    def layers(self) -> list[dict[str, Any]]:
        """Name, type, output shape and parameter count of every layer."""
        if not self.keras:
            return []
        return [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": _output_shape(layer),
                "parameters": int(layer.count_params()),
            }
            for layer in self.predictor.model.layers
        ]

    def metrics(self) -> dict[str, Any] | None:
        """The run's test metrics (metrics.json, read afresh: it may appear while serving)."""
        path = self.run_dir / METRICS_FILE
        if not path.is_file():
            return None
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: ignoring unreadable test metrics (%s)", path, exc)
            return None
        return metrics if isinstance(metrics, dict) else None

    def training(self) -> dict[str, Any] | None:
        """What run.json says about training (status, epochs, best epoch, timings)."""
        from cnnlab.training import read_state

        try:
            state = read_state(self.run_dir)
        except CnnlabError as exc:
            log.warning("ignoring the run state: %s", exc)
            return None
        keys = ("status", "dataset", "epochs_run", "best_epoch", "best_metrics", "train_seconds")
        return {key: state[key] for key in keys if key in state} or None

    def picture(self, name: str) -> bytes:
        """A run picture as PNG bytes, drawn on first use; CnnlabError if it cannot be drawn."""
        if name not in PICTURES:
            raise CnnlabError(f"no picture named {name!r}; choose one of {', '.join(PICTURES)}")
        with self._picture_lock:
            if name not in self._pictures:
                self._pictures[name] = self._draw(name)
            return self._pictures[name]

    def _draw(self, name: str) -> bytes:
        if name == "model":
            self._need_keras("the model picture")
            from cnnlab.visualize.model import draw_model

            return _png(draw_model(self.predictor.model))
        from cnnlab.training import read_history
        from cnnlab.visualize.history import plot_history

        history = read_history(self.run_dir)
        if not history:
            raise CnnlabError(f"{self.run_dir}: no training history (history.csv) in this run")
        return _png(plot_history(history, monitor=self._monitor()))

    def _monitor(self) -> str:
        """The metric that chose the best epoch, as the run's config.toml says."""
        from cnnlab.training import run_config

        try:
            return run_config(self.run_dir).train.monitor
        except CnnlabError:
            return "val_accuracy"


# --- Pictures as data URLs --------------------------------------------------------------------


def _png(picture: Image.Image | Any) -> bytes:
    """Encode a PIL image or a matplotlib Figure as PNG."""
    from cnnlab.visualize._common import DPI

    buffer = io.BytesIO()
    if hasattr(picture, "savefig"):
        picture.savefig(buffer, format="png", dpi=DPI)
    else:
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gray_png(image: NDArray[np.float32]) -> bytes:
    """A model input in [0, 1], shape (H, W) or (H, W, 1), as an 8-bit grayscale PNG."""
    from PIL import Image

    pixels = np.round(np.clip(image.reshape(image.shape[:2]), 0, 1) * 255).astype(np.uint8)
    return _png(Image.fromarray(pixels))


def feature_grid_png(maps: NDArray[np.float32]) -> tuple[bytes, int]:
    """One layer's channels tiled into one colour-mapped RGBA PNG, and the number of columns.

    Colours span the layer's own range, so channels compare with each other; the gaps between
    tiles are transparent.
    """
    from PIL import Image

    from cnnlab.visualize.features import tile_channels

    shown = maps[:, :, :MAX_FEATURE_CHANNELS]
    grid = tile_channels(shown)
    columns = (grid.shape[1] + 1) // (shown.shape[1] + 1)
    gaps = np.isnan(grid)
    values = np.where(gaps, 0.0, grid)
    low, high = float(values[~gaps].min()), float(values[~gaps].max())
    levels = np.round((values - low) / max(high - low, 1e-12) * 255).astype(np.uint8)
    rgba = _colour_table()[levels]
    rgba[gaps] = 0
    return _png(Image.fromarray(rgba)), columns


@functools.cache
def _colour_table() -> NDArray[np.uint8]:
    """256 RGBA colours of the feature colour map."""
    import matplotlib

    return np.round(matplotlib.colormaps[FEATURE_CMAP](np.linspace(0, 1, 256)) * 255).astype(
        np.uint8
    )


def _output_shape(layer: Any) -> list[int | None] | None:
    try:
        return list(layer.output.shape[1:])
    except (AttributeError, ValueError):  # a layer without a single symbolic output
        return None
