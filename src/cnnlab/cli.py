"""The `cnnlab` command line: parses flags, calls the library, prints results.

No work happens here that a Python user could not do with the library; a user error
(`CnnlabError`) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab._version import __version__
from cnnlab.config import PRECISIONS
from cnnlab.errors import CnnlabError
from cnnlab.visualize.render import KINDS

log = logging.getLogger("cnnlab")

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except CnnlabError as exc:
        _error(str(exc))
        return EXIT_USER_ERROR
    except OSError as exc:  # disk full, permission denied...: the user's machine, not a bug
        _error(
            f"{exc.filename + ': ' if getattr(exc, 'filename', None) else ''}{exc.strerror or exc}"
        )
        return 1
    except KeyboardInterrupt:
        _error("interrupted; run the same command again to resume")
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one small function per command adds its sub-parser."""
    parser = argparse.ArgumentParser(
        prog="cnnlab",
        description="Build, train, understand and use convolutional image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (
        _add_data,
        _add_summary,
        _add_train,
        _add_lr_find,
        _add_sweep_command,
        _add_evaluate,
        _add_predict,
        _add_visualize,
        _add_serve,
        _add_export,
        _add_bench,
        _add_runs,
        _add_compare,
    ):
        add_command(commands)
    return parser


# --- One function per command: its flags, and the handler it calls ------------------------


def _add_data(commands: Any) -> None:
    """`cnnlab data info`: which dataset files were found, and whether they check;
    `cnnlab data check DIR`: what an image folder holds, and what in it would bias training."""
    data = commands.add_parser("data", help="datasets: where the files are and whether they check")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    info = data_commands.add_parser(
        "info", help="which dataset files were found, where, checks (exit 2 if any fails)"
    )
    info.add_argument(
        "--dataset",
        default="fashion_mnist",
        help="fashion_mnist, mnist, a .npz file or an image folder (default: %(default)s)",
    )
    _add_data_dir(info)
    info.add_argument("--no-download", action="store_true", help="never download missing files")
    info.set_defaults(handler=_data_info)
    check = data_commands.add_parser(
        "check",
        help="an image folder's counts, sizes and modes; unreadable files, duplicates (also "
        "across splits), imbalance (exit 1 on unreadable files or cross-split duplicates)",
    )
    check.add_argument("folder", metavar="DIR", help="class folders, or train/ (val/) test/")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--near-threshold",
        type=int,
        default=None,
        metavar="BITS",
        help="most perceptual-hash bits (of 64) two near duplicates differ in (default: 8, "
        "measured; 0..32)",
    )
    check.set_defaults(handler=_data_check)


def _add_summary(commands: Any) -> None:
    """`cnnlab summary`: the Keras summary of an architecture or a run, `--explain`ed."""
    summary = commands.add_parser("summary", help="the model's Keras summary")
    summary.add_argument(
        "model",
        nargs="?",
        default="basic_cnn",
        help="built-in architecture, .toml/.json spec, run folder or .keras file "
        "(default: %(default)s, the seed model)",
    )
    summary.add_argument("--input-shape", default="28,28,1", help="H,W,C (default: %(default)s)")
    summary.add_argument("--num-classes", type=int, default=10, help="default: %(default)s")
    summary.add_argument(
        "--explain",
        action="store_true",
        help="work out every layer's output shape and parameters in words",
    )
    _add_unsafe(summary)
    summary.set_defaults(handler=_summary)


# `cnnlab train`'s settings: (flag, dotted config key, metavar, help). The type, the choices and
# the default shown in --help come from cnnlab.config (the default recipe), so none is typed
# twice; a flag left out keeps what the recipe, preset or --config file says.
TRAIN_FLAGS: tuple[tuple[str, str, str | None, str], ...] = (
    ("--model", "model.architecture", "ARCH", "built-in architecture or a .toml/.json spec"),
    (
        "--init-filters",
        "model.init_filters",
        None,
        "first conv layer's kernels: whitening (of the data), random (Keras' default) or "
        "classic (hand-made edge/blur filters)",
    ),
    (
        "--init",
        "model.init",
        "RUN",
        "fine-tune: start from a trained run's model (a run folder or .keras file); its head is "
        "replaced when the classes differ",
    ),
    (
        "--freeze-until",
        "model.freeze_until",
        "LAYER",
        "fine-tuning: the layers up to LAYER stay frozen during the head epochs (empty: all but "
        "the head)",
    ),
    ("--head-epochs", "model.head_epochs", "N", "fine-tuning: epochs training the head alone"),
    (
        "--fine-tune-factor",
        "model.fine_tune_factor",
        "F",
        "fine-tuning: after the head epochs every layer trains at the learning rate times F",
    ),
    (
        "--dataset",
        "data.dataset",
        "NAME",
        "fashion_mnist, mnist, a .npz file, or a folder of pictures (class sub-folders, or "
        "train/ and test/ holding them), which trains with the photos recipe",
    ),
    ("--data-dir", "data.data_dir", "DIR", "look for dataset files here first"),
    ("--validation-split", "data.validation_split", "F", "fraction of training images held out"),
    ("--limit", "data.limit", "N", "use only the first N training images (0: all)"),
    (
        "--image-size",
        "data.image_size",
        "N|HxW",
        "an image folder's pictures as N x N or H x W pixels (auto: from the pictures)",
    ),
    (
        "--color",
        "data.color",
        None,
        "an image folder's pictures in rgb or grayscale (auto: rgb when any has colour)",
    ),
    (
        "--resize",
        "data.resize",
        None,
        "how a picture of another shape is fitted: squash (stretch), crop (centre), pad",
    ),
    (
        "--cache",
        "data.cache",
        "memory|DIR",
        "keep an image folder's decoded pictures in memory or in DIR (empty: stream each epoch)",
    ),
    ("--epochs", "train.epochs", "N", "most epochs to train"),
    ("--batch-size", "train.batch_size", "N", "images per step (the global batch)"),
    ("--optimizer", "train.optimizer", "NAME", "a Keras optimizer name"),
    ("--learning-rate", "train.learning_rate", "LR", "the (peak) learning rate"),
    (
        "--patience",
        "train.patience",
        "N",
        "early stopping patience in epochs, best weights restored (0: off)",
    ),
    (
        "--lr-decay",
        "train.lr_decay",
        "F",
        "multiply the learning rate by F after every epoch (1: constant)",
    ),
    (
        "--lr-schedule",
        "train.lr_schedule",
        None,
        "exponential: --lr-decay after every epoch; cosine: --warmup-epochs of linear warm-up, "
        "then half a cosine down to zero at the last epoch",
    ),
    ("--warmup-epochs", "train.warmup_epochs", "N", "cosine schedule: epochs of linear warm-up"),
    (
        "--reduce-lr-patience",
        "train.reduce_lr_patience",
        "N",
        "also cut the learning rate after N epochs without improvement (0: off)",
    ),
    ("--monitor", "train.monitor", "METRIC", "metric for early stopping, checkpoint and target"),
    (
        "--target-accuracy",
        "train.target_accuracy",
        "A",
        "stop as soon as the monitored accuracy reaches A (0: off)",
    ),
    ("--seed", "train.seed", "N", "random seed; makes a run repeatable (-1: drawn and recorded)"),
    (
        "--class-weight",
        "train.class_weight",
        None,
        "auto: weigh each class's loss by its inverse frequency in the training set (an "
        "imbalanced folder); empty: every image the same",
    ),
    (
        "--steps-per-execution",
        "train.steps_per_execution",
        "N",
        "training steps per compiled call (0: auto, 16; 1 on the torch backend, which allows "
        "only 1)",
    ),
    (
        "--backend",
        "train.backend",
        None,
        "Keras backend (auto: $KERAS_BACKEND, else tensorflow); recorded in the run's config",
    ),
    (
        "--precision",
        "train.precision",
        None,
        "auto: mixed_bfloat16 on CPUs with bfloat16 instructions, mixed_float16 on a GPU, "
        "else float32 ($CNNLAB_PRECISION overrides auto)",
    ),
    ("--name", "run.name", "NAME", "run folder name (empty: from architecture, data, recipe)"),
    ("--runs-dir", "run.runs_dir", "DIR", "where run folders go"),
)


def _add_train(commands: Any) -> None:
    """`cnnlab train`: every setting of the config as a flag, plus presets and parallelism."""
    from cnnlab.config import RECIPES

    train = commands.add_parser("train", help="train a model and write runs/<name>/")
    train.add_argument("--config", type=Path, help="a TOML file of settings (see docs/training.md)")
    train.add_argument(
        "--preset",
        choices=_preset_names(),
        help="a ready-made architecture and recipe: fcn (fully convolutional seed model), "
        "improved (>= 93.5%% in under 15 min on 2 CPU cores), resnet (>= 94.5%% within 60 min); "
        "flags and --config override its settings",
    )
    train.add_argument(
        "--recipe",
        choices=RECIPES,
        help="default: early stopping; seed: the notes' 50 epochs exactly; photos: a folder of "
        "pictures' default (batch norm, global pooling, augmentation, rate cut on plateaus)",
    )
    for flag, key, metavar, text in TRAIN_FLAGS:
        _add_config_flag(train, flag, key, metavar, text)
    train.add_argument(
        "--no-download",
        dest="data.download",
        action="store_const",
        const=False,
        help="never download missing dataset files",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="start over even if the run folder exists"
    )
    _add_parallel_flags(train)
    _add_print_config(train)
    _add_tracking_flags(train)
    train.set_defaults(handler=_train)


TRACKERS = ("tensorboard", "mlflow")
"""What `train --log` takes; TensorBoard's event files are written for every run anyway."""


def _add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    """`--log mlflow` and its settings, `--tensorboard-histograms` (the config's [log])."""

    class LogTo(argparse.Action):
        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            names = [name.strip() for name in str(values).split(",") if name.strip()]
            unknown = [name for name in names if name not in TRACKERS]
            if unknown or not names:
                parser.error(f"--log {values}: choose from {', '.join(TRACKERS)} (comma list)")
            if "mlflow" in names:
                setattr(namespace, "log.mlflow", True)

    parser.add_argument(
        "--log",
        action=LogTo,
        metavar="TRACKER",
        dest="log.mlflow",
        help="also log the run to mlflow (repeatable or a comma list; tensorboard's event "
        "files in RUN/logs/ are always written)",
    )
    parser.add_argument(
        "--tensorboard-histograms",
        dest="log.tensorboard_histograms",
        action="store_const",
        const=True,
        help="TensorBoard: a histogram of every weight after each epoch",
    )

    class AndMlflow(argparse.Action):
        """A setting of MLflow's, which asks for MLflow too."""

        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            setattr(namespace, self.dest, values)
            setattr(namespace, "log.mlflow", True)

    parser.add_argument(
        "--mlflow-uri",
        action=AndMlflow,
        dest="log.mlflow_uri",
        metavar="URI",
        help="log to this MLflow tracking server or database (implies --log mlflow; default: "
        "$MLFLOW_TRACKING_URI, else MLflow's own, sqlite:///mlflow.db in the current folder)",
    )
    parser.add_argument(
        "--mlflow-experiment",
        action=AndMlflow,
        dest="log.mlflow_experiment",
        metavar="NAME",
        help="the MLflow experiment (implies --log mlflow; default: cnnlab)",
    )


def _add_lr_find(commands: Any) -> None:
    """`cnnlab lr-find`: the learning-rate range test on what `cnnlab train` would train."""
    from cnnlab.config import RECIPES

    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate range test: a short run over rising rates, the loss curve plotted, "
        "a rate suggested (writes no run folder)",
    )
    lr_find.add_argument("--config", type=Path, help="a TOML file of settings, as for train")
    lr_find.add_argument("--preset", choices=_preset_names(), help="as for train")
    lr_find.add_argument("--recipe", choices=RECIPES, help="as for train")
    for flag, key, metavar, text in TRAIN_FLAGS:  # train's flags, so a train command line works
        _add_config_flag(lr_find, flag, key, metavar, text)
    lr_find.add_argument(
        "--no-download",
        dest="data.download",
        action="store_const",
        const=False,
        help="never download missing dataset files",
    )
    _add_tracking_flags(lr_find)  # accepted, so a train command line works; lr-find logs nothing
    lr_find.add_argument(
        "--steps",
        type=int,
        default=100,
        metavar="N",
        help="training steps, one rate each (default: %(default)s)",
    )
    lr_find.add_argument(
        "--start-lr",
        type=float,
        default=1e-7,
        metavar="LR",
        help="first rate (default: %(default)s)",
    )
    lr_find.add_argument(
        "--end-lr", type=float, default=10.0, metavar="LR", help="last rate (default: %(default)s)"
    )
    lr_find.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("lr-find.png"),
        help="the curve as PNG (default: %(default)s, in the current folder)",
    )
    lr_find.set_defaults(handler=_lr_find)


def _add_config_flag(
    parser: argparse.ArgumentParser, flag: str, key: str, metavar: str | None, text: str
) -> None:
    """A flag that sets config key `key`; its type, choices and shown default come from the
    config. It defaults to None, so only the flags a user gives override the other layers."""
    from cnnlab.config import CHOICES, recipe

    section, _, name = key.partition(".")
    default = getattr(getattr(recipe("default"), section), name)
    shown = "empty" if default == "" else default
    parser.add_argument(
        flag,
        dest=key,
        type=type(default),
        choices=CHOICES.get(key),
        metavar=None if key in CHOICES else metavar,
        help=f"{text} (default: {shown})".replace("%", "%%"),
    )


def _add_evaluate(commands: Any) -> None:
    """`cnnlab evaluate [RUN]`: test metrics, per-class report, confusion matrix."""
    evaluate = commands.add_parser("evaluate", help="test metrics, per-class report, confusion")
    evaluate.add_argument(
        "run",
        type=Path,
        nargs="?",
        help="run folder (default: the latest finished run under runs/)",
    )
    _add_data_dir(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print metrics as JSON")
    evaluate.add_argument(
        "--tta",
        action="store_true",
        help="also report test-time augmentation (mean with the flipped image)",
    )
    _add_unsafe(evaluate)
    evaluate.set_defaults(handler=_evaluate)


def _add_predict(commands: Any) -> None:
    """`cnnlab predict [RUN] IMAGE...`: top-k classes for any pictures."""
    predict = commands.add_parser("predict", help="top-k classes for any image files")
    predict.add_argument(
        "run",
        type=Path,
        nargs="?",
        help="run folder, .keras file or exported .onnx file; left out (the first argument is "
        "then an image file): the latest finished run under runs/",
    )
    predict.add_argument("images", nargs="*", help="image files (PNG, JPEG, WebP, GIF, BMP...)")
    predict.add_argument("-k", "--top-k", type=int, default=3, help="default: %(default)s")
    predict.add_argument("--json", action="store_true", help="print results as JSON")
    predict.add_argument(
        "--keep-size",
        action="store_true",
        help="feed each whole image at its own size, not trimmed or resized (fully "
        "convolutional models such as --preset fcn; 28x28 up to 1024 pixels on an edge)",
    )
    _add_onnx(predict)
    _add_unsafe(predict)
    predict.set_defaults(handler=_predict)


def _add_visualize(commands: Any) -> None:
    """`cnnlab visualize KIND ...`: one picture of a model, a run or an image."""
    visualize = commands.add_parser(
        "visualize",
        aliases=["visualise"],
        help="pictures: model, history, confusion, calibration (reliability before and after "
        "the temperature), errors, filters, features, convpool, gradcam, preprocess, batch",
    )
    visualize.add_argument("kind", choices=KINDS, help="which picture")
    visualize.add_argument(
        "target",
        nargs="?",
        help="run folder, default the latest finished one under runs/ (for model also an "
        "architecture; for convpool and preprocess the image, "
        "or for preprocess a run folder trained on images, then the image: its input recipe; "
        "for batch also a folder of pictures, as `train --dataset` would read it)",
    )
    visualize.add_argument(
        "image", nargs="?", help="image file for features, gradcam, convpool (and preprocess RUN)"
    )
    visualize.add_argument("-o", "--out", type=Path, help="PNG path (default: in the run folder)")
    visualize.add_argument("--layer", help="filters: conv layer name or index (default: first)")
    visualize.add_argument(
        "-n",
        "--count",
        type=int,
        default=16,
        help="errors, batch: how many images (default: %(default)s)",
    )
    visualize.add_argument(
        "--init-sets",
        action="store_true",
        help="filters: the random, classic and whitening starting kernels",
    )
    _add_data_dir(visualize)
    _add_unsafe(visualize)
    visualize.set_defaults(handler=_visualize)


def _add_serve(commands: Any) -> None:
    """`cnnlab serve RUN`: the web page and JSON API (defaults from `cnnlab.serve.limits`)."""
    from cnnlab.serve import limits

    serve = commands.add_parser("serve", help="web page and JSON API over a trained run")
    serve.add_argument(
        "run",
        type=Path,
        nargs="?",
        help="run folder, .keras file or exported .onnx file (default: the latest finished "
        "run under runs/)",
    )
    _add_onnx(serve)
    serve.add_argument(
        "--host",
        default=limits.DEFAULT_HOST,
        help="address to listen on (default: %(default)s, this machine only; the page has no "
        "authentication, so another address gets a warning)",
    )
    serve.add_argument("--port", type=int, default=limits.DEFAULT_PORT, help="default: %(default)s")
    serve.add_argument(
        "--max-upload-mb",
        type=float,
        default=limits.DEFAULT_MAX_UPLOAD_BYTES / 2**20,
        help="largest request body in MiB (default: %(default)s)",
    )
    serve.add_argument(
        "-k", "--top-k", type=int, default=limits.DEFAULT_TOP_K, help="default: %(default)s"
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=limits.DEFAULT_BODY_TIMEOUT_S,
        metavar="S",
        help="seconds a request body may take to arrive before a 408 (default: %(default)s)",
    )
    serve.add_argument(
        "--keep-size",
        action="store_true",
        help="a fully convolutional model (--preset fcn) sees each picture at its own size "
        "unless a request asks ?keep_size=false",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    _add_unsafe(serve)
    serve.set_defaults(handler=_serve)


def _add_export(commands: Any) -> None:
    """`cnnlab export RUN`: ONNX, SavedModel or LiteRT, with a sidecar JSON."""
    export = commands.add_parser(
        "export", help="write the model as ONNX, SavedModel or LiteRT into the run folder"
    )
    export.add_argument(
        "run",
        type=Path,
        nargs="?",
        help="run folder or .keras file (default: the latest finished run under runs/)",
    )
    export.add_argument(
        "-f",
        "--format",
        dest="formats",
        action="append",
        metavar="FORMAT",
        help="onnx (default), saved_model or litert (tflite); repeat or comma-separate",
    )
    export.add_argument("-o", "--out-dir", type=Path, help="folder to write to (default: the run)")
    _add_unsafe(export)
    export.set_defaults(handler=_export)


def _add_bench(commands: Any) -> None:
    """`cnnlab bench`: the performance table."""
    bench = commands.add_parser(
        "bench", help="performance table: cnnlab's trainer vs plain Keras and PyTorch"
    )
    bench.add_argument("--quick", action="store_true", help="everything tiny: checks it runs")
    bench.add_argument("--repeats", type=int, default=3, help="alternated repeats (median)")
    bench.add_argument(
        "--json",
        type=Path,
        default=Path("bench.json"),
        help="file or folder for the JSON results (default: %(default)s)",
    )
    bench.add_argument("--run", help="run folder whose model (and exports) to time for inference")
    bench.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="what cnnlab's --precision auto becomes in every measurement; float32 stands in "
        "for a CPU without bfloat16 (default: %(default)s, this machine's choice)",
    )
    _add_data_dir(bench)
    _add_unsafe(bench)
    bench.set_defaults(handler=_bench)


def _add_sweep_command(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep", help="grid or random search over settings and seeds, as Ray Tune trials"
    )
    sweep.add_argument("file", type=Path, help="the sweep's TOML file (see docs/training.md)")
    sweep.add_argument(
        "--address",
        help="an existing Ray cluster (e.g. ray://HOST:10001 or auto); default: a local Ray",
    )
    sweep.add_argument("--out", type=Path, help="sweep folder (default: RUNS_DIR/NAME)")
    sweep.add_argument(
        "--overwrite", action="store_true", help="delete an existing sweep folder first"
    )
    sweep.set_defaults(handler=_sweep)


def _add_parallel_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "data-parallel training on JAX's distributed runtime (needs --backend jax)"
    )
    group.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="start N processes on 127.0.0.1 that train one model together (--batch-size "
        "is the global batch, split evenly over them)",
    )
    group.add_argument(
        "--devices",
        type=int,
        default=0,
        metavar="N",
        help="local devices each process trains on (GPUs; on a CPU, N XLA host devices)",
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="join a cluster: process 0's address (or $CNNLAB_COORDINATOR; Slurm and Open "
        "MPI are detected)",
    )
    group.add_argument(
        "--num-processes", type=int, metavar="N", help="with --coordinator ($CNNLAB_NUM_PROCESSES)"
    )
    group.add_argument(
        "--process-id", type=int, metavar="I", help="with --coordinator ($CNNLAB_PROCESS_ID)"
    )


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", help="look for dataset files here first")


def _add_onnx(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="use RUN/model.onnx (from `cnnlab export`) on ONNX Runtime, without TensorFlow",
    )


def _add_unsafe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unsafe",
        action="store_true",
        help="load a .keras file that holds Python code (a Lambda layer): loading runs that "
        "code, so only for a file you trust (refused by default)",
    )


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


def _error(message: str) -> None:
    print(f"cnnlab: error: {' '.join(message.split())}", file=sys.stderr)


# --- command handlers: parse, call the library, print ---------------------------------------


def _data_info(args: argparse.Namespace) -> int:
    from cnnlab.data import describe

    rows = describe(args.dataset, args.data_dir, download=not args.no_download)
    problems = [row.pop("problem") for row in rows]
    print(_table(rows))
    for problem in filter(None, problems):  # like `sha256sum -c`: list all, then fail
        _error(problem)
    return EXIT_USER_ERROR if any(problems) else 0


def _data_check(args: argparse.Namespace) -> int:
    from cnnlab.data.check import NEAR_THRESHOLD, check_folder, format_report

    threshold = NEAR_THRESHOLD if args.near_threshold is None else args.near_threshold
    report = check_folder(args.folder, near_threshold=threshold)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return report.exit_code


def _summary(args: argparse.Namespace) -> int:
    from cnnlab.model.builder import summary_text
    from cnnlab.runs import model_or_architecture

    try:
        shape = tuple(int(v) for v in args.input_shape.split(","))
    except ValueError:
        raise CnnlabError(
            f"--input-shape must look like 28,28,1, got {args.input_shape!r}"
        ) from None
    model = model_or_architecture(args.model, shape, args.num_classes, unsafe=args.unsafe)
    print(summary_text(model), end="")
    if args.explain:
        from cnnlab.model.explain import format_explanation

        print()
        print(format_explanation(model))
    return 0


def _preset_names() -> list[str]:
    from cnnlab.config import presets

    return presets()


def _train(args: argparse.Namespace) -> int:
    from cnnlab.config import load_config
    from cnnlab.training.trainer import train

    overrides = {k: v for k, v in vars(args).items() if "." in k}
    config = load_config(
        args.config, recipe_name=args.recipe, overrides=overrides, preset=args.preset
    )
    if args.print_config:
        return _print_config(config)
    if args.processes is not None:
        return _launch_processes(args, config.train.backend)
    result = train(config, overwrite=args.overwrite, cluster=_cluster(args))
    if not result.writer:
        return 0  # process 0 reports
    state = result.state
    shown = ", ".join(f"{k} {v:.4g}" for k, v in state.best_metrics.items() if k != "epoch_seconds")
    print(
        f"run: {result.run_dir}  best epoch {state.best_epoch} of "
        f"{state.epochs_run}  ({shown})  trained {state.train_seconds} s"
    )
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from cnnlab.config import load_config
    from cnnlab.training.lr_find import lr_find
    from cnnlab.visualize._common import save_png
    from cnnlab.visualize.lr_find import plot_lr_find

    overrides = {k: v for k, v in vars(args).items() if "." in k}
    config = load_config(
        args.config, recipe_name=args.recipe, overrides=overrides, preset=args.preset
    )
    result = lr_find(config, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr)
    path = save_png(plot_lr_find(result), args.out)
    ending = "; stopped early: the loss diverged" if result.stopped_early else ""
    print(
        f"tested {len(result.rates)} rates from {result.rates[0]:.3g} to "
        f"{result.rates[-1]:.3g}{ending}"
    )
    print(f"smoothed loss lowest at {result.minimum_rate:.3g}; the suggestion is a tenth of it")
    print(f"wrote {path}")
    print(f"suggested learning rate: {result.suggestion:.2g}")  # last: scripts read it
    return 0


def _launch_processes(args: argparse.Namespace, backend: str) -> int:
    """`--processes N`: the same command as N processes joined on 127.0.0.1, on `backend`
    (the configuration's; "auto": $KERAS_BACKEND's)."""
    from cnnlab.training.distributed import launch

    if args.coordinator or args.num_processes is not None or args.process_id is not None:
        raise CnnlabError("--processes starts its own processes; leave out --coordinator")
    return launch(_without_option(args.argv, "--processes"), args.processes, backend=backend)


def _cluster(args: argparse.Namespace) -> Any:
    """The cluster the data-parallel flags and environment name (None: one process)."""
    from cnnlab.training.distributed import cluster_from

    cluster = cluster_from(
        coordinator=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        devices=args.devices,
    )
    if cluster is not None and cluster.process_id:
        logging.getLogger("cnnlab").setLevel(logging.WARNING)  # process 0 tells the story
    return cluster


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` and `option=VALUE`."""
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == option:
            skip = True
        elif not token.startswith(option + "="):
            kept.append(token)
    return kept


def _sweep(args: argparse.Namespace) -> int:
    from cnnlab.training.sweep import format_table, load_sweep, require_ray, run_sweep

    require_ray()  # before the file: without Ray, nothing else matters
    sweep = load_sweep(args.file, out=args.out)
    result = run_sweep(sweep, address=args.address, overwrite=args.overwrite)
    print(format_table(result, sweep), end="")
    test = result.winner_test
    print(
        f"winner: {result.trials[0]['run_dir']}  test accuracy "
        f"{test.get('test_accuracy', float('nan')):.4f}  (only the winner is tested)"
    )
    print(f"trials: {result.trials_file}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cnnlab.evaluation import evaluate, format_report

    run = _run_or_latest(args.run)
    metrics = evaluate(run, data_dir=args.data_dir, tta=args.tta, unsafe=args.unsafe)
    print(json.dumps(metrics, indent=2) if args.json else format_report(metrics))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from cnnlab.prediction.inference import load_predictor

    if args.top_k < 1:
        raise CnnlabError(f"--top-k must be >= 1, got {args.top_k}")
    args.run, args.images = _run_and_images(args.run, args.images)
    predictor = load_predictor(args.run, onnx=args.onnx, unsafe=args.unsafe)
    results = predictor.predict(args.images, top_k=args.top_k, keep_size=args.keep_size)
    failed = [r for r in results if r.error is not None]
    for result in failed:
        _error(result.error or "")
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for result in (r for r in results if r.error is None):
            top = ", ".join(f"{name} {p:.3f}" for name, p in result.top)
            print(f"{result.source}: {top}")
            if result.unsure:  # below the run's threshold: maybe not one of its classes
                print(f"  not sure: maybe {result.label} (low confidence after calibration)")
            if result.box is not None:  # so a wrong crop shows at once
                print(f"  found box {list(result.box)} (left, top, right, bottom in its pixels)")
    return EXIT_USER_ERROR if failed else 0


def _visualize(args: argparse.Namespace) -> int:
    from cnnlab.visualize import render

    if args.count < 1:
        raise CnnlabError(f"--count must be >= 1, got {args.count}")
    args.target, args.image = _visualize_target(args.kind, args.target, args.image)
    rendered = render(
        args.kind,
        args.target,
        args.image,
        out=args.out,
        layer=args.layer,
        count=args.count,
        init_sets=args.init_sets,
        data_dir=args.data_dir,
        unsafe=args.unsafe,
    )
    if rendered.text:
        print(rendered.text)
    print(f"wrote {rendered.path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cnnlab.serve import serve

    if not 0 < args.port < 65536:
        raise CnnlabError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.top_k < 1 or not args.body_timeout > 0:
        raise CnnlabError("--max-upload-mb and --body-timeout must be > 0, and --top-k >= 1")
    serve(
        _run_or_latest(args.run),
        args.host,
        args.port,
        log_level=args.log_level,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        top_k=args.top_k,
        onnx=args.onnx,
        unsafe=args.unsafe,
        body_timeout_s=args.body_timeout,
        keep_size=args.keep_size,
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from cnnlab.export import export, parse_formats

    formats = parse_formats(args.formats or ["onnx"])  # a bad name fails before the model loads
    run = _run_or_latest(args.run)
    written = export(run, formats, out_dir=args.out_dir, unsafe=args.unsafe)
    for name, path in written.items():
        print(f"wrote {name}: {path} (+ {path.name}.json)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from cnnlab.bench import format_table, run_bench, write_json

    if args.repeats < 1:
        raise CnnlabError(f"--repeats must be >= 1, got {args.repeats}")
    results = run_bench(
        quick=args.quick,
        repeats=args.repeats,
        data_dir=args.data_dir,
        run_dir=args.run,
        precision=args.precision,
        unsafe=args.unsafe,
    )
    print(format_table(results), end="")
    print(f"\nwritten: {write_json(results, args.json)}")
    return 0


# --- Runs: listing, comparing, the latest finished run, the resolved config (issue 30) -------


def _add_runs(commands: Any) -> None:
    """`cnnlab runs [RUNS_DIR]`: every run at a glance, newest first."""
    from cnnlab.catalog.listing import DEFAULT_RUNS_DIR

    runs = commands.add_parser(
        "runs",
        help="every run under a runs folder, newest first: status (finished, training, "
        "interrupted, unreadable), data, model, best validation metric and epoch, test "
        "accuracy, training time, start",
    )
    runs.add_argument(
        "runs_dir",
        nargs="?",
        default=DEFAULT_RUNS_DIR,
        metavar="RUNS_DIR",
        help="the folder that holds the run folders (default: %(default)s)",
    )
    runs.add_argument("--json", action="store_true", help="print a list of JSON objects")
    runs.set_defaults(handler=_runs)


def _add_compare(commands: Any) -> None:
    """`cnnlab compare RUN RUN...`: what differed between runs, and what it did."""
    from cnnlab.catalog.listing import DEFAULT_RUNS_DIR

    compare = commands.add_parser(
        "compare",
        help="two or more runs side by side: the settings that differ, the metrics, and "
        "their curves on one picture",
    )
    compare.add_argument(
        "runs", nargs="*", metavar="RUN", help="run folders, or names of runs under --runs-dir"
    )
    compare.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("compare.png"),
        help="the curves as PNG (default: %(default)s, in the current folder)",
    )
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.add_argument(
        "--runs-dir",
        default=DEFAULT_RUNS_DIR,
        metavar="DIR",
        help="where a run named without a path is looked for (default: %(default)s)",
    )
    compare.set_defaults(handler=_compare)


def _add_print_config(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (presets, file and flags applied, the seed "
        "drawn, auto settings chosen) as TOML and exit without training; "
        "`cnnlab train --config FILE` trains exactly that",
    )


def _runs(args: argparse.Namespace) -> int:
    from cnnlab.catalog import find_runs, format_runs

    found = find_runs(args.runs_dir)
    if args.json:
        print(json.dumps([summary.to_dict() for summary in found], indent=2))
    elif not found:
        print(f"no runs in {args.runs_dir} yet; train one with `cnnlab train`")
    else:
        print(format_runs(found))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from cnnlab.catalog import compare_runs, format_comparison, resolve_run
    from cnnlab.runs import Run
    from cnnlab.visualize._common import save_png
    from cnnlab.visualize.compare import plot_comparison

    if len(args.runs) < 2:
        raise CnnlabError(
            f"compare needs at least two runs, got {len(args.runs)}; `cnnlab runs` lists them"
        )
    comparison = compare_runs([resolve_run(run, args.runs_dir) for run in args.runs])
    curves = [
        (label, Run(s.path).history())
        for label, s in zip(comparison.labels, comparison.runs, strict=True)
    ]
    path = save_png(plot_comparison(curves), args.out)
    if args.json:
        print(json.dumps({**comparison.to_dict(), "picture": str(path)}, indent=2))
    else:
        print(format_comparison(comparison))
        print(f"wrote {path}")
    return 0


def _print_config(config: Any) -> int:
    """`train --print-config`: what train would run, resolved as it would resolve it (the
    seed drawn, auto settings chosen), as TOML on stdout; nothing is trained or written."""
    from cnnlab.training.trainer import resolve_defaults

    print(resolve_defaults(config).to_toml(), end="")
    return 0


def _run_or_latest(run: Path | None) -> Path:
    """The run named, or the latest finished one under the default runs folder (said in one
    line on stderr, so a script reading stdout is not disturbed)."""
    if run is not None:
        return run
    from cnnlab.catalog import latest_finished
    from cnnlab.catalog.listing import format_time

    latest = latest_finished()
    print(
        f"using the latest finished run: {latest.path} (finished {format_time(latest.finished)})",
        file=sys.stderr,
    )
    return latest.path


def _run_and_images(run: Path | None, images: list[str]) -> tuple[Path, list[str]]:
    """`predict [RUN] IMAGE...`: the first argument is the run when it is a folder or a
    .keras/.onnx file (images are neither), else an image, and the latest run is used."""
    from cnnlab.catalog import looks_like_run

    if run is not None and not looks_like_run(run):
        images, run = [str(run), *images], None
    if not images:
        raise CnnlabError("predict needs image files: cnnlab predict [RUN] IMAGE...")
    return _run_or_latest(run), images


def _visualize_target(kind: str, target: str | None, image: str | None) -> tuple[Any, Any]:
    """`visualize KIND [RUN] [IMAGE]`: a kind that draws a run uses the latest finished run
    when none is named; for features and gradcam a lone argument that is no run (a folder,
    .keras or .onnx file) is the image. convpool and preprocess take an image alone."""
    from cnnlab.catalog import looks_like_run
    from cnnlab.visualize.render import IMAGE_ONLY, NEEDS_IMAGE

    if kind in IMAGE_ONLY:
        return target, image
    if kind in NEEDS_IMAGE and image is None and target is not None and not looks_like_run(target):
        target, image = None, target
    if target is None:
        target = str(_run_or_latest(None))
    return target, image


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(nothing found)"
    columns = list(rows[0])
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, *body])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
