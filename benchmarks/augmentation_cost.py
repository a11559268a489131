"""What augmentation costs a training step, per Keras backend: Keras' layers, cnnlab's, none.

For each backend installed (tensorflow, jax, torch; each in its own process with
KERAS_BACKEND set), times `--steps` training steps of an architecture three ways:
- "Keras layers": its augmentation done by Keras' RandomFlip, RandomTranslation and
  RandomErasing, as the presets shipped before issue 16;
- "cnnlab layers": as shipped now, with cnnlab's RandomHorizontalFlip, RandomShift and
  RandomErasingMask (same statistics, static-shape batch operations);
- "no augmentation": the same network with those layers left out.
Each model is built and compiled once; the timed fits are then alternated over `--rounds`
rounds and the median is reported (single timings of the same model varied by up to 1.4x on
this project's shared 2-core CPU). Prints a Markdown table: ms a step and the ratio to no
augmentation. On a GPU machine, run it there (it uses whatever device the backend finds).

    python benchmarks/augmentation_cost.py [--model resnet] [--backends jax,torch]
        [--steps 8] [--rounds 3] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.model.builder import LayerSpec

VARIANTS = ("Keras layers", "cnnlab layers", "no augmentation")

# cnnlab's layer -> (Keras' layer with the same statistics, how its options translate)
_KERAS_EQUIVALENT: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "RandomHorizontalFlip": ("RandomFlip", lambda o: {"mode": "horizontal"}),
    "RandomShift": (
        "RandomTranslation",
        lambda o: {
            "height_factor": o.get("height_factor", 0.1),
            "width_factor": o.get("width_factor", 0.1),
            "fill_mode": "constant",
            "fill_value": o.get("fill_value", 0.0),
        },
    ),
    "RandomErasingMask": (
        "RandomErasing",
        lambda o: {
            "factor": o.get("factor", 0.5),
            "scale": o.get("scale", [0.02, 0.33]),
            "fill_value": o.get("fill_value", 0.0),
            "value_range": [0.0, 1.0],
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="resnet", help="built-in name or spec file")
    parser.add_argument("--backends", default="tensorflow,jax,torch", help="comma-separated")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per fit")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-backend", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_backend:
        print(json.dumps(_measure(args)))
        return

    rows = []
    for backend in args.backends.split(","):
        if importlib.util.find_spec(backend) is None:
            print(f"{backend}: not installed, skipped", file=sys.stderr)
            continue
        src = str(Path(__file__).resolve().parents[1] / "src")
        env = {
            **os.environ,
            "KERAS_BACKEND": backend,
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        }
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--one-backend"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"{backend}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps a fit, median of rounds")
    print()
    print("| backend | device | precision | variant | ms/step | x no augmentation | rounds (ms) |")
    print("|---|---|---|---|---:|---:|---|")
    for row in rows:
        base = statistics.median(row["times"]["no augmentation"])
        for variant in VARIANTS:
            values = row["times"][variant]
            median = statistics.median(values)
            rounds = " ".join(f"{v:.0f}" for v in values)
            print(
                f"| {row['backend']} | {row['device']} | {row['precision']} | {variant} "
                f"| {median:.1f} | {median / base:.2f} | {rounds} |"
            )


def _measure(args: argparse.Namespace) -> dict[str, object]:
    """Time the three variants on this process's backend (KERAS_BACKEND)."""
    from cnnlab._backend import dtype_policy, fastest_precision
    from cnnlab._backend import keras as _keras
    from cnnlab.model.builder import build_model, load_architecture  # after KERAS_BACKEND is set

    keras = _keras()
    precision = fastest_precision() if args.precision == "auto" else args.precision
    ours = load_architecture(args.model)
    variants = {
        "Keras layers": dataclasses.replace(
            ours, layers=tuple(_as_keras(layer) for layer in ours.layers)
        ),
        "cnnlab layers": ours,
        "no augmentation": dataclasses.replace(
            ours, layers=tuple(x for x in ours.layers if x.type not in _KERAS_EQUIVALENT)
        ),
    }
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size * args.steps, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    models = {}
    for label, architecture in variants.items():
        with dtype_policy(precision):
            model = build_model(architecture, (28, 28, 1), 10)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # compiles: not timed
        models[label] = model
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(args.rounds):
        for label, model in models.items():
            started = time.perf_counter()
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
            times[label].append(1000 * (time.perf_counter() - started) / args.steps)
    devices = keras.distribution.list_devices() if keras.backend.backend() == "jax" else []
    device = str(devices[0]).split(":")[0] if devices else _device(keras.backend.backend())
    return {
        "backend": keras.backend.backend(),
        "device": device,
        "precision": precision,
        "times": times,
    }


def _device(backend: str) -> str:
    if backend == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def _as_keras(layer: LayerSpec) -> LayerSpec:
    """A cnnlab augmentation layer's spec as the Keras layer with the same statistics."""
    if layer.type not in _KERAS_EQUIVALENT:
        return layer
    name, options = _KERAS_EQUIVALENT[layer.type]
    return dataclasses.replace(layer, type=name, options=options(dict(layer.options)))


if __name__ == "__main__":
    main()
