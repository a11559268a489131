"""Run the whole benchmark: contenders alternated, each measurement in its own process.

Every figure comes from a fresh `python -m cnnlab.bench._worker` process, so memory peaks and
thread pools are per contender; contenders alternate within each repeat (reversed every other
repeat) so that a busy machine slows all of them alike, and the median of the repeats is kept.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnlab._backend import PRECISION_ENV, requested_backend
from cnnlab.bench.flops import CONVENTION, TRAIN_TO_FORWARD
from cnnlab.errors import CnnlabError

log = logging.getLogger(__name__)

BASELINE = "keras"
CONTENDERS = {
    "cnnlab": "cnnlab trainer",
    "keras": "plain Keras fit",
    "torch": "PyTorch loop",
}
RECIPES = {"seed": "seed recipe", "default": "default recipe"}
STARTUP_TARGET_S = 0.5


@dataclass(frozen=True)
class Settings:
    """How much work each figure gets: the full run, or a tiny `quick` one."""

    repeats: int = 3
    limit: int = 0  # training images before the validation split (0: all 60,000)
    warmup: int = 2048  # images of the untimed first epoch, which traces the step function
    target_accuracy: float = 0.91
    max_epochs: int = 20
    test_images: int = 10_000
    latency_calls: int = 500
    batch_size: int = 1024
    batch_repeats: int = 5
    startup_runs: int = 7
    matmul_size: int = 4096

    @classmethod
    def quick(cls) -> Settings:
        """Everything tiny: a check that the benchmark runs, not a measurement."""
        return cls(
            repeats=1,
            limit=2000,
            warmup=256,
            target_accuracy=0.70,
            max_epochs=2,
            test_images=2000,
            latency_calls=100,
            batch_repeats=2,
            startup_runs=3,
            matmul_size=2048,
        )


class BenchError(CnnlabError):
    """A benchmark process failed; the message carries the end of its error output."""


def run_bench(
    *,
    quick: bool = False,
    repeats: int = 3,
    data_dir: str | None = None,
    run_dir: str | None = None,
    precision: str = "auto",
    unsafe: bool = False,
) -> dict[str, Any]:
    """Measure training, time to accuracy, inference, memory and start-up; return the results.

    `precision` other than "auto" is what cnnlab's `--precision auto` resolves to in every
    measurement (through $CNNLAB_PRECISION): `float32` stands in for a CPU without bfloat16.

    `quick` runs everything tiny (one repeat, 2,000 images) to check that it works. `data_dir`
    is where Fashion-MNIST is looked for (as `--data-dir`); `run_dir` is a run folder whose model
    and exports (`*.onnx`, `*.tflite`) are timed for inference (default: an untrained seed model);
    `unsafe` lets its `.keras` file hold Python code (see `cnnlab.runs.Run.load_model`).
    """
    from cnnlab.config import PRECISIONS

    settings = Settings.quick() if quick else Settings(repeats=repeats)
    if settings.repeats < 1:
        raise CnnlabError(f"repeats={repeats}: must be at least 1")
    if precision not in PRECISIONS:
        raise CnnlabError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    forced = {} if precision == "auto" else {PRECISION_ENV: precision}
    common: dict[str, Any] = {"data_dir": data_dir, "limit": settings.limit}
    has_torch = importlib.util.find_spec("torch") is not None
    contenders = [c for c in CONTENDERS if c != "torch" or has_torch]
    notes = [] if has_torch else ["PyTorch loop skipped: torch is not installed"]
    started = time.perf_counter()

    # Training throughput and the machine's peak, alternated within each repeat.
    training: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    peaks: list[float] = []
    for repeat in range(settings.repeats):
        log.info("training throughput, repeat %d of %d", repeat + 1, settings.repeats)
        for contender in contenders if repeat % 2 == 0 else contenders[::-1]:
            args = {**common, "warmup": settings.warmup}
            training[contender].append(_run_worker(f"train_{contender}", args, env=forced))
        peak = _run_worker(
            "peak",
            {"size": settings.matmul_size, "repeats": 3},
            env={"OPENBLAS_NUM_THREADS": str(_cores()), "OMP_NUM_THREADS": str(_cores())},
        )
        peaks.extend(peak["runs"])

    # Time to the target test accuracy: one long run per recipe.
    accuracy = {}
    for recipe in RECIPES:
        log.info("time to %.0f%% test accuracy, %s recipe", 100 * settings.target_accuracy, recipe)
        args = {
            **common,
            "recipe": recipe,
            "target": settings.target_accuracy,
            "max_epochs": settings.max_epochs,
            "test_images": settings.test_images,
        }
        accuracy[recipe] = _run_worker("time_to_accuracy", args, env=forced)

    log.info("inference")
    inference = _run_worker(
        "inference",
        {
            "data_dir": data_dir,
            "run_dir": run_dir,
            "unsafe": unsafe,
            "calls": settings.latency_calls,
            "batch_size": settings.batch_size,
            "repeats": settings.batch_repeats,
        },
    )
    notes += inference["notes"]

    log.info("start-up times")
    startup = _startup_times(settings.startup_runs)

    first = training["cnnlab"][0]
    forward = sum(first["forward_flops"].values())
    peak_gflops = statistics.median(peaks)
    return {
        "machine": machine_info(),
        "precision": {
            "requested": precision,
            "policy": first["precision"],
            "reason": first["precision_reason"],
        },
        "settings": {**asdict(settings), "quick": quick, "batch_size_training": 32},
        "model": {
            "name": "Basic_CNN_model",
            "params": first["params"],
            "forward_flops_per_image": forward,
            "train_flops_per_image": TRAIN_TO_FORWARD * forward,
            "forward_flops_by_layer": first["forward_flops"],
            "flops_convention": CONVENTION,
        },
        "peak": {
            "gflops": peak_gflops,
            "runs": peaks,
            "method": f"float32 {settings.matmul_size}x{settings.matmul_size} matmul, numpy BLAS, "
            f"{_cores()} threads, median",
        },
        "training": _training_rows(training, TRAIN_TO_FORWARD * forward, peak_gflops),
        "time_to_accuracy": {
            "target": settings.target_accuracy,
            "max_epochs": settings.max_epochs,
            "test_images": settings.test_images,
            "rows": [{"recipe": r, **v} for r, v in accuracy.items()],
        },
        "inference": {
            "rows": inference["rows"],
            "peak_rss_mib": inference["peak_rss_mib"],
        },
        "startup": startup,
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }


def _training_rows(
    runs: dict[str, list[dict[str, Any]]], train_flops: int, peak_gflops: float
) -> list[dict[str, Any]]:
    speed = {c: statistics.median(r["images_per_s"] for r in rs) for c, rs in runs.items()}
    rows = []
    for contender, results in runs.items():
        gflops = speed[contender] * train_flops / 1e9
        rows.append(
            {
                "contender": contender,
                "label": CONTENDERS[contender],
                "note": results[0]["note"],
                "params": results[0]["params"],
                "images": results[0]["images"],
                "images_per_s": speed[contender],
                "runs_images_per_s": [r["images_per_s"] for r in results],
                "ratio_to_keras": speed[contender] / speed[BASELINE],
                "gflops": gflops,
                "percent_of_peak": 100 * gflops / peak_gflops,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            }
        )
    return rows


def _run_worker(task: str, args: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """Run one measurement in a fresh Python process and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", "cnnlab.bench._worker", task, json.dumps(args), str(out)]
        done = subprocess.run(
            command, env={**os.environ, **(env or {})}, capture_output=True, text=True
        )
        if done.returncode != 0 or not out.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise BenchError(f"benchmark step {task} failed (exit {done.returncode}):\n{tail}")
        return json.loads(out.read_text(encoding="utf-8"))


def _startup_times(runs: int) -> list[dict[str, Any]]:
    """Wall time of `import cnnlab`, `cnnlab --help` and a bare interpreter, alternated."""
    script = Path(sys.executable).with_name("cnnlab")
    help_command = (
        [str(script), "--help"]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from cnnlab.cli import main; main(['--help'])"]
    )
    commands = {
        "import cnnlab": [sys.executable, "-c", "import cnnlab"],
        "cnnlab --help": help_command,
        "python -c pass (reference)": [sys.executable, "-c", "pass"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times[name].append(time.perf_counter() - started)
    return [
        {
            "command": name,
            "median_s": statistics.median(t),
            "runs_s": t,
            "target_s": None if name.startswith("python") else STARTUP_TARGET_S,
        }
        for name, t in times.items()
    ]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU (model and the instruction sets that decide precision), cores, memory, library
    versions and the date, for the record."""
    from cnnlab._cpu import cpu_info

    info = cpu_info()
    versions = {}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "jax", "torch", "numpy", "onnxruntime"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": info.model,
        "cpu_instruction_sets": list(info.instruction_sets),
        "architecture": info.machine,
        "keras_backend": requested_backend(os.environ),
        "cores": _cores(),
        "memory_gib": _memory_gib(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def write_json(results: dict[str, Any], path: str | os.PathLike[str] = "bench.json") -> Path:
    """Write the results as JSON to `path` (a file, or a folder to hold `bench.json`)."""
    from cnnlab._io import atomic_write_text

    target = Path(path)
    if target.is_dir():
        target = target / "bench.json"
    atomic_write_text(target, json.dumps(results, indent=2) + "\n")
    return target


__all__ = ["BenchError", "Settings", "machine_info", "run_bench", "write_json"]
