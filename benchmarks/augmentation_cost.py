"""What each augmentation layer costs a training step, on the current Keras backend and device.

Times `--steps` training steps of an architecture as shipped, then with each of its Random*
layers left out in turn, then with none of them, and prints a table. The variants are
alternated over `--rounds` rounds and the median is reported: single timings of the same
model varied by up to 1.4x on this project's 2-core CPU. This is how the JAX-on-GPU
slowdown of RandomTranslation in docs/training.md was found (run there with KERAS_BACKEND=jax).

    python benchmarks/augmentation_cost.py [--model resnet] [--steps 32] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np

from cnnlab._backend import dtype_policy, fastest_precision
from cnnlab._backend import keras as _keras
from cnnlab.models import Architecture, build_model, load_architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", help="built-in name or spec file")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    keras = _keras()
    precision = fastest_precision() if args.precision == "auto" else args.precision
    full = load_architecture(args.model)
    augment = sorted({layer.type for layer in full.layers if layer.type.startswith("Random")})
    variants = {"as shipped": full}
    for name in augment:
        variants[f"without {name}"] = _without(full, {name})
    if augment:
        variants["without any augmentation"] = _without(full, set(augment))

    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size * args.steps, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    print(f"backend {keras.backend.backend()}, {precision}, {args.model}, batch {args.batch_size}")
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(args.rounds):
        for label, architecture in variants.items():
            keras.backend.clear_session()
            with dtype_policy(precision):
                model = build_model(architecture, (28, 28, 1), 10)
            model.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=16)
            warm = args.batch_size * 16  # compiles: not timed
            model.fit(x[:warm], y[:warm], batch_size=args.batch_size, epochs=1, verbose=0)
            started = time.perf_counter()
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
            times[label].append(1000 * (time.perf_counter() - started) / args.steps)
    baseline = statistics.median(times["as shipped"])
    print(f"{'variant':<34}{'ms/step':>10}{'x as shipped':>14}   rounds")
    for label, values in times.items():
        median = statistics.median(values)
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"{label:<34}{median:>10.2f}{median / baseline:>14.2f}   {rounds}")


def _without(architecture: Architecture, types: set[str]) -> Architecture:
    """The architecture minus some layer types (only plain stacks or unnamed layers are cut)."""
    kept = tuple(layer for layer in architecture.layers if layer.type not in types)
    return dataclasses.replace(architecture, layers=kept)


if __name__ == "__main__":
    main()
