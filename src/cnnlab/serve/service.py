"""The model behind the web page: loaded once, shared by every request thread.

FastAPI runs blocking work in a thread pool, so several requests can reach the model at once.
`_model_lock` around every model call keeps that correct: Keras does not promise that one model
may be called from several threads at once, and on a CPU concurrent calls would only compete for
the cores. Preparing pictures needs no lock here: `cnnlab.images` serialises Pillow's decoding
itself (its decompression-bomb guard is not thread-safe), and finding the object in a photo
(NumPy and SciPy, which release the GIL) runs in parallel, about 1.7x faster on 2 cores than
one at a time; a request prepares its picture while another one runs the model.
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError
from cnnlab.inference import load_predictor
from cnnlab.prediction import Outcome, Prediction
from cnnlab.runs import Run
from cnnlab.visualize._common import to_png

log = logging.getLogger(__name__)

PICTURES = ("model", "history")
"""The run pictures the page shows, drawn on first request and kept in memory."""
FEATURE_CMAP = "viridis"
MAX_FEATURE_CHANNELS = 64
"""Channels shown per layer: a wider layer shows its first 64."""


class NeedsKeras(CnnlabError):
    """What was asked needs the Keras model (layers, feature maps), not an exported one."""


class ModelService:
    """A trained run's model, class names and pictures, safe to use from many threads."""

    def __init__(
        self, run: str | Path, *, top_k: int = 3, onnx: bool = False, unsafe: bool = False
    ) -> None:
        # raises RunError for a bad run; an .onnx file (or `onnx`) runs on ONNX Runtime
        self.predictor = load_predictor(run, onnx=onnx, unsafe=unsafe)
        self.keras = self.predictor.backend == "keras"
        self.run = Run.open(run)
        self.top_k = top_k
        self._model_lock = threading.Lock()
        self._picture_lock = threading.Lock()
        self._pictures: dict[str, bytes] = {}

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    @property
    def run_dir(self) -> Path:
        return self.run.dir

    @property
    def model_name(self) -> str:
        return self.predictor.name

    @property
    def parameters(self) -> int | None:
        return self.predictor.parameters

    @property
    def model(self) -> Any:
        """The Keras model (only where `self.keras`)."""
        return getattr(self.predictor, "model", None)

    def _need_keras(self, what: str) -> None:
        if not self.keras:
            raise NeedsKeras(
                f"{what} needs the Keras model; this server runs an exported ONNX model "
                "(serve the run folder without --onnx to see them)"
            )

    # --- Predicting -------------------------------------------------------------------------

    def prepare_boxed(self, images: Sequence[Any]) -> tuple[NDArray[np.float32], list[Outcome]]:
        """Model inputs for the images that decode, and per image its error, or the box found
        in it (None for a model-ready array or a blank picture)."""
        return self.predictor.prepare_boxed(images)

    def prepare_whole(self, image: Any) -> NDArray[np.float32]:
        """A batch of one: the whole picture at its own size, for a fully convolutional model.

        CnnlabError if this model has a fixed input size; ImageError if the picture is unusable
        (including sides outside 28..1024 pixels).
        """
        self.predictor.check_keep_size()
        return self.predictor.prepare_whole(image)[np.newaxis]

    def probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities for a batch of model inputs, one row per input."""
        with self._model_lock:
            return self.predictor.probabilities(batch)

    def predict(
        self, images: Sequence[Any], sources: Sequence[str], top_k: int | None = None
    ) -> list[Prediction]:
        """Top-k predictions per image; an image that does not decode gets its error instead."""
        batch, outcomes = self.prepare_boxed(images)
        probabilities = self.probabilities(batch)
        return self.predictor.pair(sources, outcomes, probabilities, self.clamp_top_k(top_k))

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
            return feature_maps(self.model, image)

    # --- Describing the run -----------------------------------------------------------------

    @functools.cached_property
    def summary(self) -> str:
        """The model's Keras summary as plain text."""
        if not self.keras:
            return f"{self.model_name}: an exported ONNX model; `cnnlab summary RUN` shows layers\n"
        from cnnlab.models import summary_text

        with self._model_lock:
            return summary_text(self.model)

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
            for layer in self.model.layers
        ]

    def metrics(self) -> dict[str, Any] | None:
        """The run's test metrics (metrics.json, read afresh: it may appear while serving)."""
        return self.run.metrics()

    def training(self) -> dict[str, Any] | None:
        """What run.json says about training (status, epochs, best epoch, timings)."""
        if not self.run.state_file.is_file():
            return None
        try:
            state = self.run.state().to_dict()
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

            return to_png(draw_model(self.model))
        from cnnlab.visualize.history import plot_history

        history = self.run.history()
        if not history:
            raise CnnlabError(f"{self.run_dir}: no training history (history.csv) in this run")
        return to_png(plot_history(history, monitor=self.run.monitor()))


# --- Pictures as data URLs --------------------------------------------------------------------


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gray_png(image: NDArray[np.float32]) -> bytes:
    """A model input in [0, 1], shape (H, W) or (H, W, 1), as an 8-bit grayscale PNG."""
    from PIL import Image

    pixels = np.round(np.clip(image.reshape(image.shape[:2]), 0, 1) * 255).astype(np.uint8)
    return to_png(Image.fromarray(pixels))


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
    return to_png(Image.fromarray(rgba)), columns


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
