"""`cnnlab visualize KIND ...`: make one picture from a run folder and save it as a PNG.

Each picture module returns a figure or an image and knows nothing about files; this module
finds what a picture needs in the run folder (model, history, metrics, data), calls it, and
writes the PNG atomically into the run folder (or `out`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, RunError
from cnnlab.runs import Run
from cnnlab.visualize._common import save_png

KINDS = (
    "model",
    "history",
    "confusion",
    "calibration",
    "errors",
    "filters",
    "features",
    "convpool",
    "gradcam",
    "preprocess",
    "batch",
)
IMAGE_ONLY = frozenset({"convpool", "preprocess"})  # `cnnlab visualize KIND IMAGE`: no run
NEEDS_IMAGE = frozenset({"features", "convpool", "gradcam", "preprocess"})
SHOWN_INIT_KERNELS = 18  # 2 x 9: the whitening filters of 3x3 patches and their negations


@dataclass(frozen=True)
class Rendered:
    """Where the picture went, and any text that goes with it (e.g. most-confused pairs)."""

    path: Path
    text: str = ""


def render(
    kind: str,
    target: str | Path,
    image: Any = None,
    *,
    out: str | Path | None = None,
    layer: str | None = None,
    count: int = 16,
    init_sets: bool = False,
    data_dir: str | None = None,
    unsafe: bool = False,
) -> Rendered:
    """Make the picture `kind` for `target` (a run folder; for `model` also an architecture).

    `convpool` and `preprocess` need only an image, given as `target` or `image`. `unsafe`
    loads a model file that holds Python code (see `cnnlab.runs.Run.load_model`).
    """
    if kind not in KINDS:
        raise CnnlabError(f"unknown picture {kind!r}; choose one of {', '.join(KINDS)}")
    if kind in IMAGE_ONLY and image is None:
        target, image = "", target
    if kind in NEEDS_IMAGE and image is None:
        raise CnnlabError(f"`visualize {kind}` needs an image: cnnlab visualize {kind} RUN IMAGE")
    run_dir = Path(target) if target and Path(target).is_dir() else None
    picture, text = _PICTURES[kind](
        run_dir=run_dir,
        target=target,
        image=image,
        layer=layer,
        count=count,
        init_sets=init_sets,
        data_dir=data_dir,
        unsafe=unsafe,
    )
    if out is None:
        stem = "filters-init" if kind == "filters" and init_sets else kind
        if isinstance(image, (str, Path)):
            stem = f"{kind}-{Path(image).stem}"
        out = (run_dir or Path.cwd()) / f"{stem}.png"
    return Rendered(save_png(picture, out), text)


def _need_run(run_dir: Path | None, target: Any, kind: str) -> Path:
    if run_dir is None:
        raise RunError(
            f"{target}: not a run folder; `visualize {kind}` needs one made by `cnnlab train`"
        )
    return run_dir


def _model(run_dir: Path | None, target: Any, unsafe: bool = False, **_: Any) -> tuple[Any, str]:
    from cnnlab.runs import model_or_architecture
    from cnnlab.visualize.model import draw_model

    return draw_model(model_or_architecture(target, unsafe=unsafe), scale_xy=4), ""


def _history(run_dir: Path | None, target: Any, **_: Any) -> tuple[Any, str]:
    from cnnlab.visualize.history import plot_run_history

    return plot_run_history(Run(_need_run(run_dir, target, "history"))), ""


def _confusion(
    run_dir: Path | None, target: Any, data_dir: str | None = None, **_: Any
) -> tuple[Any, str]:
    from cnnlab.evaluation import evaluate
    from cnnlab.visualize.confusion import format_most_confused, most_confused, plot_confusion

    run = Run(_need_run(run_dir, target, "confusion"))
    metrics = run.metrics() or evaluate(run.dir, data_dir=data_dir)
    matrix, names = metrics["confusion_matrix"], metrics["class_names"]
    text = format_most_confused(most_confused(matrix, names))
    return plot_confusion(matrix, names), text


def _calibration(
    run_dir: Path | None,
    target: Any,
    data_dir: str | None = None,
    unsafe: bool = False,
    **_: Any,
) -> tuple[Any, str]:
    from cnnlab.calibration import Reliability
    from cnnlab.evaluation import evaluate, format_calibration
    from cnnlab.visualize.calibration import plot_calibration

    run = Run(_need_run(run_dir, target, "calibration"))
    metrics = run.metrics()
    if not metrics or "calibration" not in metrics:  # not evaluated, or before calibration
        metrics = evaluate(run.dir, data_dir=data_dir, unsafe=unsafe)
    tables = metrics["calibration"]
    after = Reliability.from_dict(tables["after"]) if "after" in tables else None
    picture = plot_calibration(
        Reliability.from_dict(tables["before"]), after, metrics.get("temperature")
    )
    return picture, format_calibration(metrics)


def _errors(
    run_dir: Path | None,
    target: Any,
    count: int = 16,
    data_dir: str | None = None,
    unsafe: bool = False,
    **_: Any,
) -> tuple[Any, str]:
    from cnnlab.visualize.errors import plot_errors

    run = Run(_need_run(run_dir, target, "errors"))
    feed = run.data(data_dir)
    model = run.load_model(unsafe=unsafe)
    x_test, y_test = feed.arrays("test")
    return plot_errors(model, x_test, y_test, feed.class_names, n=count), ""


def _filters(
    run_dir: Path | None,
    target: Any,
    layer: str | None = None,
    init_sets: bool = False,
    data_dir: str | None = None,
    unsafe: bool = False,
    **_: Any,
) -> tuple[Any, str]:
    from cnnlab.visualize.filters import plot_filter_sets, plot_filters

    if not init_sets:
        return plot_filters(Run.open(target).load_model(unsafe=unsafe), _layer_arg(layer)), ""
    # The three starting points of --init-filters, side by side, for this run's data.
    from cnnlab.model.builder import build_model
    from cnnlab.model.kernels import init_first_conv

    run = Run(_need_run(run_dir, target, "filters --init-sets"))
    config = run.config()
    feed = run.data(data_dir)
    sample = feed.sample()
    sets = {}
    for method in ("random", "classic", "whitening"):
        model = build_model(config.model.architecture, feed.input_shape, len(feed.class_names))
        name = init_first_conv(model, method, sample)
        conv = model.get_layer(name) if name else _first_conv(model)
        kernel = conv.kernel.numpy()
        # The first 18 kernels: all that whitening sets, and the 5 classic ones plus random.
        shown = min(SHOWN_INIT_KERNELS, kernel.shape[-1])
        sets[f"{method} init"] = kernel[..., :shown]
    return plot_filter_sets(sets), ""


def _first_conv(model: Any) -> Any:
    from cnnlab.visualize.filters import conv_layers

    layers = conv_layers(model)
    if not layers:
        raise CnnlabError(f"{model.name} has no Conv2D layer")
    return layers[0]


def _layer_arg(layer: str | None) -> str | int | None:
    return int(layer) if layer is not None and layer.lstrip("-").isdigit() else layer


def _model_input(predictor: Any, image: Any) -> Any:
    """The model input the found box of `image` gives (`Predictor.prepare`), as predict uses."""
    return predictor.prepare([image])[0].model_input  # ImageError if the picture is unusable


def _features(
    run_dir: Path | None, target: Any, image: Any = None, unsafe: bool = False, **_: Any
) -> tuple[Any, str]:
    from cnnlab.prediction.inference import KerasPredictor
    from cnnlab.visualize.features import plot_features

    predictor = KerasPredictor.load(target, unsafe=unsafe)
    return plot_features(predictor.model, _model_input(predictor, image)), ""


def _gradcam(
    run_dir: Path | None, target: Any, image: Any = None, unsafe: bool = False, **_: Any
) -> tuple[Any, str]:
    from cnnlab.prediction.inference import KerasPredictor
    from cnnlab.visualize.gradcam import plot_gradcam

    predictor = KerasPredictor.load(target, unsafe=unsafe)
    array = _model_input(predictor, image)
    return plot_gradcam(predictor.model, array, predictor.class_names), ""


def _convpool(image: Any = None, **_: Any) -> tuple[Any, str]:
    from cnnlab.prediction.preprocess import to_model_input
    from cnnlab.visualize.convpool import plot_convpool

    return plot_convpool(to_model_input(image)), ""


def _preprocess(run_dir: Path | None = None, image: Any = None, **_: Any) -> tuple[Any, str]:
    """The garment recipe's steps; with a run folder whose model was trained on a folder of
    images, that run's recipe instead (the picture and the input it makes)."""
    from cnnlab.prediction.preprocess import preprocess_steps
    from cnnlab.visualize.preprocess import plot_preprocess

    recipe = Run(run_dir).input_recipe() if run_dir is not None else None
    if recipe is not None:
        from cnnlab.data.folders import scale
        from cnnlab.data.images import load_image
        from cnnlab.visualize.preprocess import plot_recipe

        model_input = scale(recipe.load(image))  # ImageError naming the file if unusable
        text = f"input recipe {recipe.to_dict()} (the whole picture; nothing is cropped)"
        return plot_recipe(load_image(image).convert("RGB"), model_input, recipe), text

    steps = preprocess_steps(image)
    box = "nothing stood out" if steps.box is None else f"found box {list(steps.box)}"
    return plot_preprocess(steps), f"{box} (left, top, right, bottom in the picture's pixels)"


def _batch(
    run_dir: Path | None,
    target: Any,
    count: int = 16,
    data_dir: str | None = None,
    unsafe: bool = False,
    **_: Any,
) -> tuple[Any, str]:
    """Training pictures after the recipe and augmentation: a run's, or what
    `cnnlab train --dataset TARGET` would train on."""
    from cnnlab.config import load_config
    from cnnlab.data.feed import describe_recipe, load_feed
    from cnnlab.model.builder import build_model
    from cnnlab.visualize.batch import augmentation_layers, augmented, plot_batch

    if run_dir is not None and Run(run_dir).config_file.is_file():
        run = Run(run_dir)
        config, model = run.config(), run.load_model(unsafe=unsafe)
        feed = run.data(data_dir)
    else:
        if run_dir is None:
            raise CnnlabError(
                f"{target}: neither a run folder nor a folder of pictures; `visualize batch` "
                "takes one of them"
            )
        config = load_config(overrides={"data.dataset": str(target), "train.seed": 0})
        feed = load_feed(config, data_dir=data_dir)
        model = build_model(config.model.architecture, feed.input_shape, len(feed.class_names))
    images, labels = feed.preview(count)
    layers = [type(layer).__name__ for layer in augmentation_layers(model)]
    shown = augmented(model, images)
    how = describe_recipe(feed.recipe) if feed.recipe else "the arrays as stored"
    title = f"{len(shown)} training pictures as the model sees them: {how}; " + (
        f"augmented by {', '.join(layers)}" if layers else "no augmentation"
    )
    return plot_batch(shown, labels.tolist(), feed.class_names, title=title), ""


_PICTURES: dict[str, Any] = {
    "model": _model,
    "history": _history,
    "confusion": _confusion,
    "calibration": _calibration,
    "errors": _errors,
    "filters": _filters,
    "features": _features,
    "convpool": _convpool,
    "gradcam": _gradcam,
    "preprocess": _preprocess,
    "batch": _batch,
}
