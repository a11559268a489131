"""Whole processes, timed alternately: `cnnlab train --recipe seed` against the notes' own script.

The notes' script is the seed model built layer by layer as the notes write it, compiled with
the string 'adam', and `model.fit(X_train, y_train, epochs=E, batch_size=32)` on NumPy arrays
(the data is read with cnnlab's loader, offline, in both). Each round runs one process of each,
in alternating order; the table gives every round's wall-clock seconds, the medians and their
ratio. `--precision float32` makes cnnlab run as it does on a CPU without bfloat16.

    python benchmarks/seed_vs_cnnlab.py [--epochs 2] [--limit 20000] [--rounds 3]
        [--precision float32]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTES_SCRIPT = """
import sys
import numpy as np
import keras
from cnnlab.data import load_dataset

epochs, limit = int(sys.argv[1]), int(sys.argv[2])
data = load_dataset("fashion_mnist")
X_train = data.x_train[:limit].astype("float32")[..., np.newaxis] / 255.0
y_train = data.y_train[:limit]
keras.backend.clear_session()
WIDTH, HEIGHT, N_CHANNELS = X_train[0].shape
model = keras.models.Sequential(
    name="Basic_CNN_model",
    layers=[
        keras.layers.Input(shape=(WIDTH, HEIGHT, N_CHANNELS)),
        keras.layers.Conv2D(64, (3, 3), activation="relu", padding="same"),
        keras.layers.MaxPool2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, (3, 3), activation="relu"),
        keras.layers.MaxPool2D(2, 2),
        keras.layers.Conv2D(32, (3, 3), activation="relu"),
        keras.layers.MaxPool2D(2, 2),
        keras.layers.Flatten(),
        keras.layers.Dense(units=128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ],
)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(X_train, y_train, epochs=epochs, batch_size=32, verbose=2)
"""


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=20000, help="training images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="float32", help="cnnlab's --precision")
    args = parser.parse_args()

    from cnnlab._cpu import cpu_info

    times: dict[str, list[float]] = {"cnnlab train --recipe seed": [], "the notes' script": []}
    with tempfile.TemporaryDirectory(prefix="cnnlab-seed-vs-") as runs:
        script = Path(runs) / "notes.py"
        script.write_text(NOTES_SCRIPT)
        cnnlab = [
            sys.executable, "-m", "cnnlab", "train", "--recipe", "seed", "--seed", "1",
            "--epochs", str(args.epochs), "--limit", str(args.limit),
            "--precision", args.precision, "--runs-dir", runs, "--name", "seed", "--overwrite",
        ]  # fmt: skip
        notes = [sys.executable, str(script), str(args.epochs), str(args.limit)]
        for round_ in range(args.rounds):
            pair = [("cnnlab train --recipe seed", cnnlab), ("the notes' script", notes)]
            for name, command in pair if round_ % 2 == 0 else pair[::-1]:
                times[name].append(_timed(command))
                print(f"round {round_ + 1}: {name}: {times[name][-1]:.1f} s", file=sys.stderr)

    print(f"CPU: {cpu_info().describe()}")
    print(
        f"{args.epochs} epochs of {args.limit:,} images, batch 32; cnnlab --precision "
        f"{args.precision}; whole processes, start-up and data loading included\n"
    )
    print("| process | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median |")
    print("|---|" + "---:|" * (args.rounds + 1))
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        cells = " | ".join(f"{v:.1f} s" for v in values)
        print(f"| {name} | {cells} | {medians[name]:.1f} s |")
    ratio = medians["the notes' script"] / medians["cnnlab train --recipe seed"]
    print(f"\ncnnlab is {ratio:.2f}x faster than the notes' script (median over median)")


if __name__ == "__main__":
    main()
