"""Whole processes, timed alternately: `cnnlab train --recipe seed` against the notes' own script.

The notes' script is the seed model built layer by layer as the notes write it, compiled with
the string 'adam', and `model.fit(X_train, y_train, epochs=E, batch_size=32)` on NumPy arrays
(the data is read with cnnlab's loader, offline, in both). Each round runs one process of each,
the order turned by one place every round; the table gives every round's wall-clock seconds,
the medians and their ratios, round-by-round ratios, and CPU seconds (a process that waits
shows more wall-clock than CPU time; stolen time shows in neither). `--precision float32`
makes cnnlab run as it does on a CPU without bfloat16; `--onednn-isa avx2` holds every process
to oneDNN's AVX2 kernels (the instruction set of an AMD Zen 3); `--also LABEL=SRC` times the
seed recipe of another source tree too (a checkout of the commit a figure was reported at,
say), so a regression shows in the same rounds.

    python benchmarks/seed_vs_cnnlab.py [--epochs 2] [--limit 20000] [--rounds 3]
        [--precision float32] [--onednn-isa avx2] [--also old=/tmp/old/src]
"""

from __future__ import annotations

import argparse
import os
import resource
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


NOTES = "the notes' script"


def _stolen() -> float:
    """Seconds the hypervisor has taken from this machine's CPUs so far, per CPU (Linux's steal
    time; 0 where /proc/stat is not there). On a shared virtual machine it tells a slow round
    that the machine caused from one the program did."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") / (os.cpu_count() or 1)
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu_seconds() -> float:
    """User and system CPU seconds of every child process this one has waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall-clock seconds of one whole process, the seconds stolen from it, and the CPU seconds
    it used (all its threads; time the hypervisor stole is not counted in them)."""
    stolen, cpu, started = _stolen(), _cpu_seconds(), time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - started, _stolen() - stolen, _cpu_seconds() - cpu


def _source_tree(value: str) -> tuple[str, Path]:
    label, _, source = value.partition("=")
    if not label or not (Path(source) / "cnnlab" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{value!r}: expected LABEL=DIR with DIR/cnnlab in it")
    return label, Path(source).resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=20000, help="training images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="float32", help="cnnlab's --precision")
    parser.add_argument(
        "--onednn-isa", help="ONEDNN_MAX_CPU_ISA for every process (avx2: a Zen 3's kernels)"
    )
    parser.add_argument(
        "--also",
        type=_source_tree,
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="also time the seed recipe of the cnnlab package under SRC",
    )
    args = parser.parse_args()

    from cnnlab._cpu import cpu_info

    env = dict(os.environ)
    if args.onednn_isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.onednn_isa.upper()
    with tempfile.TemporaryDirectory(prefix="cnnlab-seed-vs-") as runs:
        script = Path(runs) / "notes.py"
        script.write_text(NOTES_SCRIPT)
        train = [
            sys.executable, "-m", "cnnlab", "train", "--recipe", "seed", "--seed", "1",
            "--epochs", str(args.epochs), "--limit", str(args.limit),
            "--precision", args.precision, "--runs-dir", runs, "--name", "seed", "--overwrite",
        ]  # fmt: skip
        processes = [("cnnlab train --recipe seed", train, env)]
        for label, source in args.also:
            pythonpath = os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            )
            processes.append((f"the same, {label}", train, {**env, "PYTHONPATH": pythonpath}))
        processes.append(
            (NOTES, [sys.executable, str(script), str(args.epochs), str(args.limit)], env)
        )
        times: dict[str, list[float]] = {name: [] for name, _, _ in processes}
        stolen: dict[str, list[float]] = {name: [] for name, _, _ in processes}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in processes}
        for round_ in range(args.rounds):
            turn = round_ % len(processes)
            for name, command, process_env in processes[turn:] + processes[:turn]:
                seconds, lost, used = _timed(command, process_env)
                times[name].append(seconds)
                stolen[name].append(lost)
                cpu[name].append(used)
                print(
                    f"round {round_ + 1}: {name}: {seconds:.1f} s ({used:.1f} CPU s)",
                    file=sys.stderr,
                )

    print(f"CPU: {cpu_info().describe()}")
    kernels = f"; ONEDNN_MAX_CPU_ISA={env['ONEDNN_MAX_CPU_ISA']}" if args.onednn_isa else ""
    print(
        f"{args.epochs} epochs of {args.limit:,} images, batch 32; cnnlab --precision "
        f"{args.precision}{kernels}; whole processes, start-up and data loading included\n"
    )
    print("| process | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median |")
    print("|---|" + "---:|" * (args.rounds + 1))
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        cells = " | ".join(
            f"{v:.1f} s ({lost:.1f})" for v, lost in zip(values, stolen[name], strict=True)
        )
        print(f"| {name} | {cells} | {medians[name]:.1f} s |")
    print("\n(in brackets: seconds of each run the hypervisor took from this machine, per CPU)\n")
    for name in list(times)[:-1]:
        ratio = medians[NOTES] / medians[name]
        rounds = [n / c for n, c in zip(times[NOTES], times[name], strict=True)]
        cpu_ratio = statistics.median(cpu[NOTES]) / statistics.median(cpu[name])
        print(
            f"{name}: {ratio:.2f}x faster than the notes' script (median over median); "
            f"round by round {min(rounds):.2f}x to {max(rounds):.2f}x; "
            f"CPU seconds {statistics.median(cpu[name]):.0f} against "
            f"{statistics.median(cpu[NOTES]):.0f} ({cpu_ratio:.2f}x fewer)"
        )


if __name__ == "__main__":
    main()
