"""Export a trained run for other runtimes: ONNX, TensorFlow SavedModel and LiteRT (.tflite).

    export("runs/basic_cnn-fashion_mnist", ["onnx", "litert"])
    # {"onnx": Path(".../model.onnx"), "litert": Path(".../model.tflite")}

Keras' own `model.export(path, format=...)` does the conversion. Each file is written beside
`model.keras` atomically (a temporary path, then a rename) and gets a sidecar JSON
(`model.onnx.json`) with the class names and the input the model expects (for a model trained on
a folder, its `input_recipe`: size, colour, resize), so that a runtime without cnnlab or Keras
still knows what the outputs mean and how to prepare a picture; an ONNX file also holds them in
its own metadata_props. A model trained under a mixed
precision policy (bfloat16 or float16 compute) is exported as a float32 copy: ONNX Runtime has
no bfloat16 convolution, and float32 is what every runtime runs fastest on a CPU anyway.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab._io import atomic_path, atomic_write_text
from cnnlab._version import __version__
from cnnlab.errors import CnnlabError
from cnnlab.runs import ONNX_FILE, Run, sidecar_path

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

FORMATS: dict[str, tuple[str, str]] = {
    "onnx": (ONNX_FILE, "onnx"),
    "saved_model": ("saved_model", "tf_saved_model"),
    "litert": ("model.tflite", "litert"),
}
"""Our format name: (file name in the run folder, Keras' `export` format)."""
ALIASES = {"tflite": "litert", "tf_saved_model": "saved_model", "savedmodel": "saved_model"}
NEEDS: dict[str, tuple[str, str]] = {"onnx": ("tf2onnx", "export")}
"""Format: (the module Keras needs for it on TensorFlow, the cnnlab extra that installs it)."""
BACKEND_FORMATS = {
    "tensorflow": frozenset(FORMATS),
    "jax": frozenset({"saved_model"}),  # Keras: ONNX needs jax2onnx, LiteRT needs TF or torch
    "torch": frozenset({"onnx"}),  # Keras: torch.onnx; no SavedModel, LiteRT needs litert-torch
}
"""What Keras' `model.export` converts on each backend (checked with Keras 3.15)."""
INPUT_RANGE = (0.0, 1.0)
PREPROCESSING = (
    "grayscale, light object on dark background, float32 in [0, 1], shaped like input_shape "
    "(28x28x1 for Fashion-MNIST); see cnnlab.prediction.preprocess.to_model_input"
)
FOLDER_PREPROCESSING = (
    "the picture upright (EXIF), transparency on white, as {color}, resized to {width}x{height} "
    "({resize}), float32 in [0, 1] (uint8 / 255); see input_recipe and "
    "cnnlab.data.folders.Recipe.load"
)


def parse_formats(values: Iterable[str]) -> list[str]:
    """Format names from flags like `onnx`, `onnx,litert` or `tflite`, in order, each once."""
    formats: list[str] = []
    for value in values:
        for name in (part.strip().lower() for part in value.split(",")):
            if not name:
                continue
            name = ALIASES.get(name, name)
            if name not in FORMATS:
                raise CnnlabError(
                    f"unknown export format {name!r}; choose from {', '.join(FORMATS)}"
                )
            if name not in formats:
                formats.append(name)
    if not formats:
        raise CnnlabError(f"no export format given; choose from {', '.join(FORMATS)}")
    return formats


def export(
    run: str | Path,
    formats: Iterable[str] = ("onnx",),
    *,
    out_dir: str | Path | None = None,
    unsafe: bool = False,
) -> dict[str, Path]:
    """Export a run folder's (or .keras file's) model; return {format: written path}.

    Files go into the run folder unless `out_dir` is given; `unsafe` loads a model file that
    holds Python code (see `cnnlab.runs.Run.load_model`). A missing optional dependency
    raises CnnlabError naming the `pip install cnnlab[...]` extra that brings it.
    """
    from cnnlab._backend import backend_name

    wanted = parse_formats(formats)
    backend = backend_name()
    for name in wanted:
        if name not in BACKEND_FORMATS.get(backend, frozenset()):
            raise CnnlabError(
                f"exporting {name} is not supported by Keras on the {backend} backend; run "
                f"the export with KERAS_BACKEND=tensorflow (model.keras is the same on every "
                "backend)"
            )
        if backend == "tensorflow":
            _check_dependency(name)
    opened = Run.open(run)
    target_dir = Path(out_dir) if out_dir is not None else opened.dir
    target_dir.mkdir(parents=True, exist_ok=True)
    model = opened.load_model(unsafe=unsafe)
    exported = float32_model(inference_model(model))
    if exported is not model:
        log.info("the model computes in %s; exporting a float32 copy", _compute_dtypes(model))
    info = metadata(run, model)
    written: dict[str, Path] = {}
    for name in wanted:
        file_name, keras_format = FORMATS[name]
        target = target_dir / file_name
        log.info("exporting %s to %s", name, target)
        if name == "saved_model":
            with _atomic_dir(target) as tmp:
                _keras_export(exported, tmp, keras_format, name)
        else:
            with atomic_path(target) as tmp:
                _keras_export(
                    _onnx_model(exported) if name == "onnx" else exported, tmp, keras_format, name
                )
                if name == "onnx":
                    _add_onnx_metadata(tmp, info)
        atomic_write_text(
            sidecar_path(target), json.dumps({**info, "format": name}, indent=2) + "\n"
        )
        written[name] = target
    return written


def metadata(run: str | Path, model: keras.Model) -> dict[str, Any]:
    """What a runtime needs besides the weights: class names, input shape and range, and how
    a picture is prepared (a folder-trained run's `input_recipe`; none for the garment recipe)."""
    n_classes = int(model.output_shape[-1])
    opened = Run.open(run)
    names = opened.class_names() or [str(i) for i in range(n_classes)]
    recipe = opened.input_recipe()
    preprocessing = PREPROCESSING
    if recipe is not None:
        height, width = recipe.size
        preprocessing = FOLDER_PREPROCESSING.format(
            color=recipe.color, width=width, height=height, resize=recipe.resize
        )
    return {
        "model_name": model.name,
        "class_names": [str(name) for name in names],
        "input_shape": [None if v is None else int(v) for v in model.input_shape[1:]],
        "input_dtype": "float32",
        "input_range": list(INPUT_RANGE),
        "preprocessing": preprocessing,
        **({"input_recipe": recipe.to_dict()} if recipe is not None else {}),
        "output": "class probabilities (softmax), one column per class name",
        "parameters": int(model.count_params()),
        "source_run": str(Path(run).resolve()),
        "cnnlab_version": __version__,
    }


def inference_model(model: keras.Model) -> keras.Model:
    """`model` without its augmentation layers (`Random*`: Keras' and cnnlab's), which pass a
    picture through unchanged at inference. Keras' own leave random-number and image-transform
    operations in a traced graph (StatelessRandomUniformV2, ImageProjectiveTransformV3) that
    ONNX Runtime cannot load, although their outputs are unused. A plain stack only; the kept
    layers are the same objects, so the weights are shared."""
    from cnnlab._backend import keras as _keras

    keras = _keras()
    if not isinstance(model, keras.Sequential):
        return model
    kept = [layer for layer in model.layers if not type(layer).__name__.startswith("Random")]
    if len(kept) == len(model.layers):
        return model
    return keras.Sequential([keras.Input(model.input_shape[1:]), *kept], name=model.name)


def float32_model(model: keras.Model) -> keras.Model:
    """`model` itself if it computes in float32, else a float32 copy with the same weights.

    Either way the model has been called once: Keras exports only a model that has (a model
    loaded from a .keras file has not).
    """
    import numpy as np

    if _compute_dtypes(model) <= {"float32"}:
        exported = model
    else:
        from cnnlab._backend import dtype_policy

        config = _float32_config(model.get_config())
        with dtype_policy("float32"):
            exported = type(model).from_config(config)
        exported.set_weights([w.astype("float32") for w in model.get_weights()])
    shape = [1] + [v or 28 for v in model.input_shape[1:]]
    exported(np.zeros(shape, dtype="float32"))
    return exported


def _onnx_model(model: keras.Model) -> keras.Model:
    """`model` with the logits as a second output (`cnnlab.model.heads.with_logits`), for an
    ONNX file: ONNX Runtime then marks unsure answers by the same energy as Keras. The other
    formats keep one output (a LiteRT converter may reorder outputs)."""
    import numpy as np

    from cnnlab.model.heads import with_logits

    both = with_logits(model)
    if both is None:
        return model
    both(np.zeros([1] + [v or 28 for v in model.input_shape[1:]], dtype="float32"))
    return both


def _compute_dtypes(model: keras.Model) -> set[str]:
    return {str(layer.dtype_policy.compute_dtype) for layer in model.layers}


def _float32_config(config: Any) -> Any:
    """A layer config with every dtype policy replaced by plain float32."""
    if isinstance(config, list):
        return [_float32_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if (
            key == "dtype"
            and isinstance(value, dict)
            and "DTypePolicy" in value.get("class_name", "")
        ):
            out[key] = "float32"
        else:
            out[key] = _float32_config(value)
    return out


def _check_dependency(name: str) -> None:
    if name in NEEDS:
        module, extra = NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise _missing(name, module, extra)


def _missing(name: str, module: str, extra: str) -> CnnlabError:
    return CnnlabError(
        f"exporting {name} needs the {module} package; "
        f"install it with `pip install 'cnnlab[{extra}]'`"
    )


def _keras_export(model: keras.Model, path: Path, keras_format: str, name: str) -> None:
    try:
        with warnings.catch_warnings(), _quiet_tf2onnx():
            warnings.simplefilter("ignore", FutureWarning)  # tf2onnx probes np.object
            model.export(str(path), format=keras_format, verbose=False)
    except ImportError as exc:
        module, extra = NEEDS.get(name, (exc.name or "a missing package", "export"))
        raise _missing(name, exc.name or module, extra) from exc


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    """tf2onnx logs its conversion steps at INFO/WARNING on the root logger; keep them out."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "root")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(max(logger.level, logging.ERROR))
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _add_onnx_metadata(path: Path, info: dict[str, Any]) -> None:
    """Put the sidecar's facts into the ONNX model's own metadata_props, too."""
    try:
        import onnx
    except ImportError:  # onnx comes with tf2onnx; without it the sidecar still has them
        return
    model = onnx.load(str(path))
    for key, value in info.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    model.producer_name = f"cnnlab {__version__} (keras export)"
    onnx.save(model, str(path))


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target`."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; give it a plain folder's mode
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
