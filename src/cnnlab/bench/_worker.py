"""One benchmark measurement per process: `python -m cnnlab.bench._worker TASK ARGS_JSON OUT`.

Each contender runs in a fresh process so that its memory peak, thread pools and library
state are its own. The result, with the process's peak RSS, is written as JSON to OUT.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.runs import Run

if TYPE_CHECKING:
    from cnnlab.data import Splits

SEED = 1
BATCH_SIZE = 32
Result = dict[str, Any]


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: ru_maxrss is in KiB on Linux, bytes on macOS

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _splits(args: dict[str, Any], validation_split: float = 0.1) -> Splits:
    from cnnlab.data import load_dataset, prepare

    dataset = load_dataset("fashion_mnist", args.get("data_dir"))
    return prepare(
        dataset, validation_split=validation_split, seed=SEED, limit=args.get("limit") or None
    )


# Training throughput: one warm-up epoch on a few images (tracing), then one timed epoch.


def train_cnnlab(args: dict[str, Any]) -> Result:
    """Exactly what `cnnlab train` runs: its model building (precision policy included),
    `compile_model` and the tf.data pipeline."""
    from cnnlab.bench.flops import forward_flops
    from cnnlab.config import load_config
    from cnnlab.data.feed import ArrayFeed
    from cnnlab.data.pipeline import make_dataset
    from cnnlab.training.trainer import build_training_model, resolve_defaults

    splits = _splits(args)
    x, y, warmup = splits.x_train, splits.y_train, args["warmup"]
    from cnnlab._backend import auto_precision

    full = resolve_defaults(load_config(overrides={"train.seed": SEED}))
    config = full.train
    model = build_training_model(full, ArrayFeed(splits))

    def fit(n: int) -> None:
        data = make_dataset(x[:n], y[:n], config.batch_size, shuffle=True, seed=SEED)
        model.fit(data, epochs=1, shuffle=False, verbose=0)

    result = _timed_epoch(fit, warmup, len(x))
    result.update(
        params=model.count_params(),
        forward_flops=forward_flops(model),
        precision=config.precision,
        precision_reason=auto_precision()[1],
        note=(
            f"{'tf.data shuffle/batch/prefetch' if config.backend == 'tensorflow' else 'PyDataset'}"
            f", steps_per_execution={config.steps_per_execution}, {config.precision}"
        ),
    )
    return result


def train_keras(args: dict[str, Any]) -> Result:
    """The seed notes' script: compile with the string 'adam', `fit` on numpy arrays."""
    from cnnlab._backend import keras as _keras
    from cnnlab.model.builder import build_model

    splits = _splits(args)
    x, y, warmup = splits.x_train, splits.y_train, args["warmup"]
    _keras().utils.set_random_seed(SEED)
    model = build_model("basic_cnn", splits.input_shape, len(splits.class_names))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def fit(n: int) -> None:
        model.fit(x[:n], y[:n], batch_size=BATCH_SIZE, epochs=1, verbose=0)

    result = _timed_epoch(fit, warmup, len(x))
    result.update(params=model.count_params(), note="numpy arrays, shuffle=True")
    return result


def train_torch(args: dict[str, Any]) -> Result:
    """The same CNN in PyTorch: Adam (Keras' epsilon), batch 32, shuffled tensor slicing."""
    import torch
    from torch import nn

    splits = _splits(args)
    torch.manual_seed(SEED)
    x = torch.from_numpy(splits.x_train).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.from_numpy(splits.y_train).long()
    model = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, 10),  # softmax is inside the loss, as in torch's custom
    )
    for module in model.modules():  # Keras' initialisation: Glorot-uniform kernels, zero biases
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()

    def fit(n: int) -> None:
        model.train()
        correct = torch.zeros((), dtype=torch.long)  # accuracy, as Keras' fit computes it
        for batch in torch.randperm(n).split(BATCH_SIZE):
            xb, yb = x[batch], y[batch]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss_fn(logits, yb).backward()
            optimizer.step()
            correct += (logits.detach().argmax(1) == yb).sum()

    result = _timed_epoch(fit, args["warmup"], len(x))
    result.update(
        params=sum(p.numel() for p in model.parameters()),
        note=f"torch {torch.__version__}, {torch.get_num_threads()} threads",
    )
    return result


def _timed_epoch(fit: Callable[[int], None], warmup: int, n: int) -> Result:
    fit(warmup)
    started = time.perf_counter()
    fit(n)
    seconds = time.perf_counter() - started
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds}


# Time to a test accuracy, with a recipe's own data split and callbacks.


def time_to_accuracy(args: dict[str, Any]) -> Result:
    """Train a cnnlab recipe with `cnnlab.train` itself until test accuracy reaches the target."""
    from cnnlab.bench._callbacks import StopAtTestAccuracy
    from cnnlab.config import load_config
    from cnnlab.training.trainer import train

    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as runs_dir:
        config = load_config(
            recipe_name=args["recipe"],
            overrides={
                "train.seed": SEED,
                "train.epochs": args["max_epochs"],
                "data.limit": args.get("limit") or 0,
                "data.data_dir": args.get("data_dir") or "",
                "run.runs_dir": runs_dir,
            },
        )
        splits = _splits(args, config.data.validation_split)
        x_test, y_test = splits.x_test[: args["test_images"]], splits.y_test[: args["test_images"]]
        stop = StopAtTestAccuracy(x_test, y_test, args["target"])
        result = train(config, callbacks=[stop])
        precision = Run(result.run_dir).config().train.precision
    reached = stop.reached_epoch
    return {
        "train_images": len(splits.x_train),
        "validation_images": len(splits.x_val),
        "precision": precision,
        "reached": reached is not None,
        "epochs": reached if reached is not None else len(stop.epochs),
        "seconds": stop.epochs[(reached or len(stop.epochs)) - 1]["train_seconds"],
        "eval_seconds": stop.eval_seconds,
        "best_test_accuracy": max(e["test_accuracy"] for e in stop.epochs),
        "per_epoch": stop.epochs,
    }


# Inference: single-image latency and batch throughput of the Keras model and exports.


def inference(args: dict[str, Any]) -> Result:
    """Latency and throughput of the run's model (or a fresh seed model) and its exports."""
    from cnnlab._backend import keras as _keras
    from cnnlab.data import load_dataset, prepare

    keras = _keras()
    run_dir = Path(args["run_dir"]) if args.get("run_dir") else None
    splits = prepare(load_dataset("fashion_mnist", args.get("data_dir")), validation_split=0.0)
    images = splits.x_test
    batch = np.resize(images, (args["batch_size"], *images.shape[1:]))
    calls, repeats = args["calls"], args["repeats"]
    run = Run(run_dir) if run_dir is not None else None
    if run is not None and run.model_file.is_file():
        model, origin = run.load_model(unsafe=bool(args.get("unsafe"))), str(run.model_file)
    else:
        from cnnlab.model.builder import build_model

        keras.utils.set_random_seed(SEED)
        model, origin = build_model("basic_cnn"), "the seed model, untrained"

    rows = [
        _inference_row(
            "keras",
            "model(x, training=False), eager",
            # convert_to_numpy: on torch the eager output still carries its autograd graph.
            lambda x: keras.ops.convert_to_numpy(model(x, training=False)),
            images,
            batch,
            calls,
            repeats,
        ),
        _inference_row(
            "keras",
            "model.predict_on_batch(x), compiled",
            model.predict_on_batch,
            images,
            batch,
            calls,
            repeats,
        ),
    ]
    notes = [f"inference model: {origin}"]
    for fmt, runner in (("onnx", _onnx_runner), ("tflite", _tflite_runner)):
        found = sorted(run_dir.glob(f"*.{fmt}")) if run_dir is not None else []
        if not found:
            notes.append(f"{fmt}: skipped, no *.{fmt} in the run folder")
            continue
        try:
            call, how = runner(found[0])
        except Exception as exc:  # a missing runtime or an unreadable export: say which
            notes.append(f"{fmt}: skipped, {found[0].name}: {type(exc).__name__}: {exc}")
            continue
        rows.append(_inference_row(fmt, how, call, images, batch, calls, repeats))
    return {"rows": rows, "notes": notes}


def _inference_row(
    fmt: str,
    how: str,
    call: Callable[[np.ndarray], Any],
    images: np.ndarray,
    batch: np.ndarray,
    calls: int,
    repeats: int,
) -> Result:
    latencies = []
    for i in range(calls + calls // 10):  # the first tenth warms up and is not counted
        x = images[i % len(images)][np.newaxis]
        started = time.perf_counter()
        np.asarray(call(x))
        latencies.append(time.perf_counter() - started)
    latencies = latencies[calls // 10 :]
    np.asarray(call(batch))
    throughput = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(call(batch))
        throughput.append(len(batch) / (time.perf_counter() - started))
    return {
        "format": fmt,
        "call": how,
        "latency_p50_ms": float(np.percentile(latencies, 50)) * 1e3,
        "latency_p99_ms": float(np.percentile(latencies, 99)) * 1e3,
        "calls": calls,
        "batch_size": len(batch),
        "batch_images_per_s": statistics.median(throughput),
    }


def _onnx_runner(path: Path) -> tuple[Callable[[np.ndarray], Any], str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), f"onnxruntime {ort.__version__}"


def _tflite_runner(path: Path) -> tuple[Callable[[np.ndarray], Any], str]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from cnnlab._backend import keras as _keras

        _keras()
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(path))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def call(x: np.ndarray) -> np.ndarray:
        if tuple(source["shape"]) != x.shape:
            interpreter.resize_tensor_input(source["index"], x.shape)
            interpreter.allocate_tensors()
            source.update(interpreter.get_input_details()[0])
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    interpreter.allocate_tensors()
    return call, f"{Interpreter.__module__}.Interpreter"


# The machine's float32 peak, measured.


def peak(args: dict[str, Any]) -> Result:
    """GFLOP/s of a large float32 matrix product (numpy's BLAS), median of several."""
    n, repeats = args["size"], args["repeats"]
    rng = np.random.default_rng(SEED)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        runs.append(2 * n**3 / (time.perf_counter() - started) / 1e9)
    return {"gflops": statistics.median(runs), "runs": runs}


TASKS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "train_cnnlab": train_cnnlab,
    "train_keras": train_keras,
    "train_torch": train_torch,
    "time_to_accuracy": time_to_accuracy,
    "inference": inference,
    "peak": peak,
}


def main(argv: list[str]) -> None:
    task, args, out = argv
    result = TASKS[task](json.loads(args))
    result["peak_rss_mib"] = peak_rss_mib()
    Path(out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
