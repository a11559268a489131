"""`--class-weight auto` on an imbalanced folder: evaluate's per-class report with and without
(issue 28).

One run generates a seeded folder of coloured signs (`signs.make_signs`: 8 classes, red or
green x circle, triangle, square, cross) in a train/ + test/ layout where train/ is imbalanced:
`--major` pictures in each class but the `--minority` ones, which get `--fraction` of that;
test/ holds `--test-count` pictures of every class, so the test set is balanced and the same for
every run. For each seed in `--seeds` it trains, each in its own process, `cnnlab train --dataset
DIR --seed S --image-size N` with cnnlab's defaults (the photos recipe) as it is and with
`--class-weight auto` (each class's loss weighed by its inverse frequency in the training
split, recorded in run.json `class_weights`), then `cnnlab evaluate RUN --json`: accuracy,
macro F1 and the per-class precision, recall and F1, of which the minority classes' matter
most. cnnlab holds about a tenth of train/ out for validation (stratified, so the minority
classes are as scarce there).

    python benchmarks/class_weight.py                               # everything (about 30 min)
    python benchmarks/class_weight.py --minority red_cross --fraction 0.05 --json cw.json
    python benchmarks/class_weight.py --major 12 --fraction 0.25 --test-count 4 --seeds 1 \\
        --image-size 24 --train-args "--epochs 2"                    # a quick check

The generated folder and runs go to a temporary folder unless `--work DIR` keeps them (a folder
made with the same settings is reused there). cnnlab picks its precision (mixed_bfloat16 on
CPUs with bfloat16 instructions).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from children import cnnlab, ints, link, machine, mean, pct, run_child, say, write_json

HERE = Path(__file__).resolve()
WEIGHTS = ("none", "auto")


def main() -> None:
    args = _parser().parse_args()
    seeds = ints(args.seeds, "--seeds")
    sys.path.insert(0, str(HERE.parent))
    import signs

    minority = [c.strip() for c in args.minority.split(",") if c.strip()]
    unknown = sorted(set(minority) - set(signs.CLASSES))
    if not minority or unknown:
        raise SystemExit(f"--minority: choose among {', '.join(signs.CLASSES)}, got {unknown}")
    if not 0 < args.fraction <= 1:
        raise SystemExit(f"--fraction {args.fraction}: must be in (0, 1]")

    results: dict[str, Any] = machine(vars(args))
    with tempfile.TemporaryDirectory(prefix="cnnlab-class-weight-") as scratch:
        work = Path(args.work or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        results["dataset"] = dataset = _dataset(args, work, minority)
        results["runs"] = runs = []
        for seed in seeds:
            for weights in WEIGHTS:
                say(f"== seed {seed}, class weights {weights}")
                try:
                    runs.append(_run(args, work, dataset, seed, weights))
                except Exception as exc:  # one run failing still prints the others
                    say(f"failed: {exc}")
                    runs.append({"seed": seed, "weights": weights, "error": f"{exc}"})
    _print_tables(results, seeds)
    write_json(args.json, results)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minority",
        default="red_square,green_triangle",
        help="the classes cut short in train/, comma-separated",
    )
    parser.add_argument(
        "--major", type=int, default=200, help="pictures a class in train/, the other classes"
    )
    parser.add_argument(
        "--fraction", type=float, default=0.08, help="the minority classes' share of --major"
    )
    parser.add_argument("--test-count", type=int, default=60, help="pictures a class in test/")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--seeds", default="1,2,3", help="cnnlab's --seed for each pair of runs")
    parser.add_argument("--image-size", default="64", help="every run's --image-size")
    parser.add_argument(
        "--train-args", default="", help='more flags for every `cnnlab train`: "--epochs 20"'
    )
    parser.add_argument("--work", type=Path, help="keep the generated folder and runs here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    return parser


def _dataset(args: argparse.Namespace, work: Path, minority: list[str]) -> dict[str, Any]:
    """A pool of `signs.make_signs` pictures (reused from `--work` when made with the same count
    and seed), then train/ and test/ as hard links into it: test/ first (`--test-count` a
    class), then train/ (`--major` a class, or `--fraction` of it for the minority)."""
    import signs

    minor = max(1, round(args.major * args.fraction))
    count = len(signs.CLASSES) * (args.major + args.test_count)
    pool = work / f"pool-{count}-seed{args.seed}"
    marker = pool / ".made.json"  # hidden: not a class folder, not an image
    wanted = {"count": count, "seed": args.seed}
    seconds = None
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        say(f"reusing {pool}")
    else:
        if pool.exists():
            shutil.rmtree(pool)
        say(f"generating {count:,} pictures in {pool}")
        start = time.perf_counter()
        signs.make_signs(pool, count, args.seed)
        seconds = round(time.perf_counter() - start, 1)
        marker.write_text(json.dumps(wanted))
    folder = work / f"imbalanced-{args.major}-{minor}"
    if folder.exists():
        shutil.rmtree(folder)
    train_counts = {}
    for name in signs.CLASSES:
        files = sorted((pool / name).iterdir())
        keep = minor if name in minority else args.major
        chosen = {
            "test": files[: args.test_count],
            "train": files[args.test_count : args.test_count + keep],
        }
        for split, paths in chosen.items():
            (folder / split / name).mkdir(parents=True)
            for path in paths:
                link(path, folder / split / name / path.name)
        train_counts[name] = len(chosen["train"])
    return {
        "folder": str(folder),
        "pool": str(pool),
        "seed": args.seed,
        "generate_seconds": seconds,
        "minority": minority,
        "train_per_class": train_counts,
        "test_per_class": args.test_count,
    }


def _run(
    args: argparse.Namespace, work: Path, dataset: dict[str, Any], seed: int, weights: str
) -> dict[str, Any]:
    runs = work / "runs"
    name = f"weights-{weights}-seed{seed}"
    command = [
        "train", "--dataset", dataset["folder"], "--image-size", args.image_size,
        "--seed", str(seed), "--runs-dir", str(runs), "--name", name, "--overwrite",
        *(["--class-weight", "auto"] if weights == "auto" else []),
        *shlex.split(args.train_args),
    ]  # fmt: skip
    figures = run_child(cnnlab(*command), work / f"{name}.log")
    run = runs / name
    state = json.loads((run / "run.json").read_text())
    done = subprocess.run(
        cnnlab("evaluate", str(run), "--json"), capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"cnnlab evaluate {run}: exit status {done.returncode}\n{done.stderr}")
    metrics = json.loads(done.stdout[done.stdout.index("{") :])
    return {
        **figures,
        "seed": seed,
        "weights": weights,
        "run": str(run),
        "command": shlex.join(["cnnlab", *command]),
        "test_accuracy": metrics["test_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "test_images": metrics["test_images"],
        "per_class": {row["class"]: row for row in metrics["per_class"]},
        "class_weights": dict(
            zip(state["class_names"], state.get("class_weights") or [], strict=False)
        ),  # empty without --class-weight
        "train_images": state.get("train_images"),
        "validation_images": state.get("validation_images"),
        "train_seconds": state.get("train_seconds"),
        "epochs_run": state.get("epochs_run"),
        "best_epoch": state.get("best_epoch"),
    }


# -- the tables ----------------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else f"{value:{fmt}}"


def _print_tables(results: dict[str, Any], seeds: list[int]) -> None:
    print(f"CPU: {results['cpu']} ({results['cores']} cores)")
    data, settings = results["dataset"], results["settings"]
    minority = data["minority"]
    counts = data["train_per_class"]
    extra = f", {settings['train_args']}" if settings["train_args"] else ""
    print(
        f"folder: {data['folder']}: train/ {', '.join(f'{k} {v}' for k, v in counts.items())}; "
        f"test/ {data['test_per_class']} a class (generator seed {data['seed']}); "
        f"--image-size {settings['image_size']}{extra}; cnnlab's defaults otherwise"
    )
    runs = [r for r in results["runs"] if "error" not in r]
    weighted = next((r["class_weights"] for r in runs if r["class_weights"]), {})
    if weighted:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in weighted.items())
        print(f"--class-weight auto's weights (run.json): {shown}")
    print()
    recall_heads = " | ".join(f"{c} recall" for c in minority)
    print(
        f"| seed | class weights | accuracy | macro F1 | {recall_heads} | training s | epochs run |"
    )
    print("|---|---|---:|---:|" + "---:|" * len(minority) + "---:|---:|")
    for seed in [*seeds, None]:
        for weights in WEIGHTS:
            rows = [r for r in runs if r["weights"] == weights and seed in (None, r["seed"])]
            if not rows:
                print(f"| {seed} | {weights} | failed |" + " |" * (len(minority) + 3))
                continue
            recalls = " | ".join(
                pct(mean([r["per_class"][c]["recall"] for r in rows])) for c in minority
            )
            label = "**mean**" if seed is None else str(seed)
            print(
                f"| {label} | {weights} | "
                f"{pct(mean([r['test_accuracy'] for r in rows]))} | "
                f"{_f(mean([r['macro_f1'] for r in rows]))} | {recalls} | "
                f"{_f(mean([r['train_seconds'] for r in rows]), '.0f')} s | "
                f"{_f(mean([r['epochs_run'] for r in rows]), '.1f')} |"
            )
    print()
    print(f"**per class, mean of {len(seeds)} seed(s): none -> auto** (* a minority class)\n")
    print("| class | train/ | precision | recall | F1 |\n|---|---:|---:|---:|---:|")
    for name in counts:
        cells = []
        for key in ("precision", "recall", "f1"):
            pair = [
                mean([r["per_class"][name][key] for r in runs if r["weights"] == w])
                for w in WEIGHTS
            ]
            fmt = pct if key != "f1" else _f
            cells.append(f"{fmt(pair[0])} -> {fmt(pair[1])}")
        star = "*" if name in minority else ""
        print(f"| {name}{star} | {counts[name]} | {' | '.join(cells)} |")
    for r in results["runs"]:
        if "error" in r:
            print(f"\nseed {r['seed']}, class weights {r['weights']}: failed: {r['error']}")


if __name__ == "__main__":
    main()
