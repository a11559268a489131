"""The run behind the web page: its predictor, loaded once and shared by every request thread.

FastAPI runs blocking work in a thread pool, so several requests can reach the model at once. The
predictor is safe for that (`cnnlab.prediction.predictor.Predictor`): its `model_lock` is held
around every model call, since Keras does not promise that one model may be called from several
threads at once, and on a CPU concurrent calls would only compete for the cores. Preparing pictures
holds no model lock: `cnnlab.data.images` serialises Pillow's decoding itself (its
decompression-bomb guard is not thread-safe), and finding the object in a photo (NumPy and SciPy,
which release the GIL) runs in parallel, about 1.7x faster on 2 cores than one at a time; a request
prepares its picture while another one runs the model. This module adds the run's pictures and
descriptions, with a lock of its own for the pictures drawn on first use.
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import CnnlabError
from cnnlab.prediction.inference import KerasPredictor, load_predictor
from cnnlab.runs import Run
from cnnlab.visualize._common import to_png
from cnnlab.visualize.mistakes import Outcomes

log = logging.getLogger(__name__)

PICTURES = ("model", "history")
"""The run pictures the page shows, drawn on first request and kept in memory."""
FEATURE_CMAP = "viridis"
MAX_FEATURE_CHANNELS = 64
"""Channels shown per layer: a wider layer shows its first 64."""


class NeedsKeras(CnnlabError):
    """What was asked needs the Keras model (layers, feature maps), not an exported one."""

    def __init__(self, what: str) -> None:
        """`what` with its verb: "feature maps need", "the model picture needs"."""
        super().__init__(
            f"{what} the Keras model; this server runs an exported ONNX model "
            "(serve the run folder without --onnx to see them)"
        )


class ModelService:
    """A trained run's predictor, class names and pictures, safe to use from many threads.

    Predictions are the predictor's own (`predictor.predict`, `keras_predictor().features`);
    this class describes the run and draws its pictures.
    """

    def __init__(
        self, run: str | Path, *, top_k: int = 3, onnx: bool = False, unsafe: bool = False
    ) -> None:
        self.run = Run.open(run)  # opened once: the predictor is loaded from it
        # raises RunError for a bad run; an .onnx file (or `onnx`) runs on ONNX Runtime
        self.predictor = load_predictor(self.run, onnx=onnx, unsafe=unsafe)
        self.keras = isinstance(self.predictor, KerasPredictor)
        self.top_k = top_k
        self._picture_lock = threading.Lock()
        self._pictures: dict[str, bytes] = {}
        self._outcomes_lock = threading.Lock()
        self._outcomes: tuple[tuple[int, int], Outcomes] | None = None

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

    def keras_predictor(self, what: str) -> KerasPredictor:
        """The predictor, which runs the Keras model; `NeedsKeras` (`what` with its verb, e.g.
        "feature maps need") where it runs an exported ONNX model."""
        if not isinstance(self.predictor, KerasPredictor):
            raise NeedsKeras(what)
        return self.predictor

    @property
    def input_info(self) -> dict[str, Any]:
        """How a picture becomes the model's input (`Predictor.input_info`), and whether a
        drawing suits it: the garment recipe (light on dark) or a one-channel model."""
        info = self.predictor.input_info()
        return {**info, "drawing": info["kind"] == "garment" or self.predictor.channels == 1}

    @property
    def colour_input(self) -> bool:
        """True when the model reads colour through its recipe: its input has no one grey
        level per pixel (`/api/features` then gives no `pixels`)."""
        recipe = self.predictor.recipe
        return recipe is not None and recipe.channels > 1

    def top_k_for(self, asked: int | None) -> int:
        """The top-k a request asked for, or the server's (the predictor caps it)."""
        return self.top_k if asked is None else asked

    # --- Describing the run -----------------------------------------------------------------

    @functools.cached_property
    def summary(self) -> str:
        """The model's Keras summary as plain text."""
        if not self.keras:
            return f"{self.model_name}: an exported ONNX model; `cnnlab summary RUN` shows layers\n"
        from cnnlab.model.builder import summary_text

        with self.predictor.model_lock:
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

    def outcomes(self) -> Outcomes:
        """The run's recorded test outcomes (`cnnlab evaluate`), read again when the file
        changes (a run evaluated while served); NoTestPredictions where there are none. They
        are data, not the model: an exported (ONNX) model's run folder has them too."""
        try:
            stat = self.run.test_predictions_file.stat()
        except OSError:
            return Outcomes.load(self.run)  # NoTestPredictions, with its hint
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._outcomes_lock:
            if self._outcomes is None or self._outcomes[0] != stamp:
                self._outcomes = (stamp, Outcomes.load(self.run))
            return self._outcomes[1]

    def _draw(self, name: str) -> bytes:
        if name == "model":
            from cnnlab.visualize.model import draw_model

            return to_png(draw_model(self.keras_predictor("the model picture needs").model))
        from cnnlab.visualize.history import plot_run_history

        return to_png(plot_run_history(self.run))


# --- Pictures as data URLs --------------------------------------------------------------------


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gray_png(image: NDArray[np.float32]) -> bytes:
    """A model input in [0, 1], shape (H, W) or (H, W, 1), as an 8-bit grayscale PNG."""
    from PIL import Image

    pixels = np.round(np.clip(image.reshape(image.shape[:2]), 0, 1) * 255).astype(np.uint8)
    return to_png(Image.fromarray(pixels))


def input_png(image: NDArray[np.float32]) -> bytes:
    """A model input in [0, 1] as a PNG: in colour for (H, W, 3), else grey (`gray_png`).

    An RGB input is rounded to 8 bits per channel, which is what a folder recipe made it from
    (uint8 / 255), so the PNG holds exactly the model's input."""
    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 3:
        pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        return to_png(Image.fromarray(pixels, "RGB"))
    return gray_png(image[:, :, :1] if image.ndim == 3 else image)


THUMBNAIL_SIDE = 128
"""Test pictures larger than this (either side) are shown shrunk to it, to keep answers small."""


def thumbnail_png(pixels: NDArray[np.uint8]) -> bytes:
    """uint8 pixels (H, W, 1 or 3) as a PNG: exactly these pixels, or a picture larger than
    `THUMBNAIL_SIDE` shrunk to fit it (keeping its shape)."""
    from PIL import Image

    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if max(image.size) > THUMBNAIL_SIDE:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    return to_png(image)


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
