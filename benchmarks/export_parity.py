"""Do exported models agree with Keras, and what does the lighter runtime buy?

Exports a run as ONNX and LiteRT (unless already there), predicts the whole test set with Keras,
ONNX Runtime and LiteRT, and prints per runtime: max |p - p_keras|, top-1 agreement with Keras,
test accuracy, install size, import time, single-image latency (p50/p99) and batch throughput.

    .venv/bin/python benchmarks/export_parity.py RUN [--reexport] [--single 300] [--batch 256]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnlab.export import export, float32_model
from cnnlab.runs import Run, load_model

IMPORTS = {
    "keras-f32": "import os; os.environ.setdefault('KERAS_BACKEND', 'tensorflow'); import keras",
    "keras": "import os; os.environ.setdefault('KERAS_BACKEND', 'tensorflow'); import keras",
    "onnxruntime": "import onnxruntime",
    "litert": "from ai_edge_litert.interpreter import Interpreter",
}
PACKAGES = {
    "keras": ["tensorflow", "keras", "ml_dtypes", "h5py"],
    "keras-f32": ["tensorflow", "keras", "ml_dtypes", "h5py"],
    "onnxruntime": ["onnxruntime"],
    "litert": ["ai_edge_litert"],
}


def site_size_mb(patterns: list[str]) -> float:
    """Megabytes of the given top-level folders in site-packages (dependencies shared aside)."""
    base = Path(importlib.util.find_spec("numpy").origin).parents[1]  # type: ignore[union-attr]
    total = 0
    for pattern in patterns:
        for folder in base.glob(pattern):
            total += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return total / 1e6


def import_seconds(statement: str, repeats: int = 3) -> float:
    """Median wall time of a cold `python -c statement` import, interpreter start excluded."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for _ in range(repeats)
    ]
    return statistics.median(times)


def latency_ms(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, n: int) -> tuple:
    for _ in range(10):
        run(image)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def throughput(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> float:
    run(x[:batch])
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        run(x[i : i + batch])
    return len(x) / (time.perf_counter() - start)


def litert_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    shape: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        if list(x.shape) != shape:
            interpreter.resize_tensor_input(index, list(x.shape))
            interpreter.allocate_tensors()
            shape[:] = list(x.shape)
        interpreter.set_tensor(index, np.ascontiguousarray(x, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--reexport", action="store_true", help="export even if files exist")
    parser.add_argument("--single", type=int, default=300, help="single-image calls timed")
    parser.add_argument("--batch", type=int, default=256, help="batch size for throughput")
    args = parser.parse_args()

    wanted = ["onnx", "litert"]
    paths = {"onnx": args.run / "model.onnx", "litert": args.run / "model.tflite"}
    if args.reexport or not all(p.is_file() for p in paths.values()):
        paths = export(args.run, wanted)
    x, y = Run(args.run).data().arrays("test")
    x = x.astype(np.float32)

    import onnxruntime as ort

    model = load_model(args.run)
    model32 = float32_model(model)
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "keras": lambda b: np.asarray(model.predict_on_batch(b)),
        "keras-f32": lambda b: np.asarray(model32.predict_on_batch(b)),
        "onnxruntime": lambda b: session.run(None, {name: b})[0],
        "litert": litert_runner(paths["litert"]),
    }

    def predict_all(run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.concatenate([run(x[i : i + 1000]) for i in range(0, len(x), 1000)])

    reference = predict_all(runners["keras"])
    reference32 = predict_all(runners["keras-f32"])
    policy = {str(layer.dtype_policy.name) for layer in model.layers}
    print(f"{args.run}: {len(x)} test images; Keras model policies {sorted(policy)}\n")
    header = (
        f"{'runtime':<12} {'max|dp|':>9} {'vs f32':>9} {'top1 agree':>10} {'accuracy':>8} "
        f"{'install MB':>10} "
        f"{'import s':>8} {'1-img p50 ms':>12} {'p99 ms':>7} {f'batch{args.batch} img/s':>15}"
    )
    print(header)
    print("-" * len(header))
    for runtime, run in runners.items():
        probs = predict_all(run)
        diff = float(np.abs(probs - reference).max())
        diff32 = float(np.abs(probs - reference32).max())
        agree = float((probs.argmax(1) == reference.argmax(1)).mean())
        accuracy = float((probs.argmax(1) == y).mean())
        p50, p99 = latency_ms(run, x[:1], args.single)
        rate = throughput(run, x, args.batch)
        print(
            f"{runtime:<12} {diff:>9.2e} {diff32:>9.2e} {agree:>10.2%} {accuracy:>8.2%} "
            f"{site_size_mb(PACKAGES[runtime]):>10.0f} {import_seconds(IMPORTS[runtime]):>8.2f} "
            f"{p50:>12.3f} {p99:>7.3f} {rate:>15,.0f}"
        )
    print(
        "\nmax|dp|: vs the trained Keras model (its own dtype policy, predict_on_batch); vs f32:"
        " vs its float32 copy, which is what gets exported. install MB for Keras: tensorflow +"
        " keras + ml_dtypes + h5py (numpy etc. shared)."
    )


if __name__ == "__main__":
    main()
