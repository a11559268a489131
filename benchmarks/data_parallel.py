"""Images per second of data-parallel training: one process, N processes, N devices.

Each setting is one `cnnlab train` in its own processes on the JAX backend (and, for scale,
one on the TensorFlow backend), the same global batch for all; the figure is the training
images of an epoch over the seconds of the last epoch (the first one also compiles). Prints a
Markdown table.

    python benchmarks/data_parallel.py --limit 12000 --epochs 2

On a 2-core CPU two processes share the same two cores, so expect no speed-up there: this
shows the overhead of the collectives. The speed-up belongs to machines with a core (or a
GPU) per process.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=12000, help="training images (then 10%% val)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--model", default="basic_cnn")
    parser.add_argument("--dataset", default="fashion_mnist")
    args = parser.parse_args()

    settings = {  # name: (backend, flags)
        "1 process": ("jax", []),
        f"{args.processes} processes": ("jax", ["--processes", str(args.processes)]),
        f"1 process, {args.processes} devices": ("jax", ["--devices", str(args.processes)]),
        "1 process, TensorFlow backend (for scale)": ("tensorflow", []),
    }
    print(
        f"| setting | images/s (last epoch) | epoch s | val accuracy |  ({args.model}, "
        f"{args.limit} images, global batch {args.batch_size}, {args.epochs} epochs)"
    )
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as runs:
        for name, (backend, flags) in settings.items():
            run = Path(runs) / "".join(c if c.isalnum() else "_" for c in name)
            command = [
                *(sys.executable, "-m", "cnnlab", "train"),
                *("--model", args.model, "--dataset", args.dataset),
                *("--limit", str(args.limit), "--epochs", str(args.epochs)),
                *("--batch-size", str(args.batch_size), "--seed", "1", "--patience", "0"),
                *("--precision", "float32", "--runs-dir", runs, "--name", run.name),
                *flags,
            ]
            env = {**os.environ, "KERAS_BACKEND": backend}
            subprocess.run(command, env=env, check=True, capture_output=True)
            state = json.loads((run / "run.json").read_text())
            with (run / "history.csv").open() as handle:
                last = list(csv.DictReader(handle))[-1]
            seconds = float(last["epoch_seconds"])
            print(
                f"| {name} | {state['train_images'] / seconds:.0f} | {seconds:.2f} | "
                f"{float(last['val_accuracy']):.4f} |"
            )


if __name__ == "__main__":
    main()
