"""Fine-tuning from a run against training from scratch, with 10, 30 and 100 pictures a class
(issue 28).

One run measures what `cnnlab train --init RUN` buys on a small folder, each run in its own
process:

- the source: a larger related folder (`signs.make_signs`, `--source-count` pictures, seed
  `--source-seed`: 8 classes, red or green x circle, triangle, square, cross) trained once with
  cnnlab's defaults (the photos recipe) at `--image-size`, then evaluated; `--source RUN` reuses
  a trained run instead (its input size and colour are then the targets').
- the target: a related but different task on new pictures (the same generator, seed
  `--target-seed`): `--task shape` (4 classes, circle, cross, square, triangle, each half red and
  half green) or `--task colour` (2 classes, red and green, every shape). The classes differ from
  the source's, so fine-tuning replaces the head. For each N in `--counts` a folder holds N
  pictures a class in train/ (nested: the 10 are among the 30, the 30 among the 100; cnnlab
  holds about a tenth of them out for validation, stratified) and the same `--test-count`
  pictures a class in test/, so every run is tested on the same files.
- for each N and each seed in `--seeds`: `cnnlab train --dataset TARGET_N --seed S --epochs E`
  from scratch, and the same with `--init SOURCE` (the head trained alone with the rest frozen for
  cnnlab's --head-epochs, then everything at the rate times --fine-tune-factor, within the same
  E epochs); then `cnnlab evaluate RUN --json`: test accuracy and macro F1, training seconds and
  epochs run (run.json; early stopping may end a run before E).

The shape task is a favourable case for fine-tuning, as a photo task related to ImageNet is: the
source had to tell the shapes apart too, so its features are the ones the target needs; the
pictures themselves are new. The colour task needs only the source's colour features.

    python benchmarks/fine_tune.py                                # everything (about 30 min)
    python benchmarks/fine_tune.py --task colour --json fine-tune.json
    python benchmarks/fine_tune.py --source runs/signs-64 --work /tmp/ft   # reuse a source run
    python benchmarks/fine_tune.py --source-count 160 --source-epochs 1 --counts 2,4 \\
        --test-count 4 --seeds 1 --epochs 2 --head-epochs 1 --image-size 24   # a quick check

The generated folders and runs go to a temporary folder unless `--work DIR` keeps them (a folder
made with the same settings is reused there, and so is a source run trained with the same
command). cnnlab picks its precision (mixed_bfloat16 on CPUs with bfloat16 instructions).
"""

from __future__ import annotations

import argparse
import json
import math
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
METHODS = ("scratch", "fine-tune")
METHOD_WORDS = {"scratch": "from scratch", "fine-tune": "fine-tuned (--init)"}


def main() -> None:
    args = _parser().parse_args()
    counts = ints(args.counts, "--counts")
    seeds = ints(args.seeds, "--seeds")

    results: dict[str, Any] = machine(vars(args))
    with tempfile.TemporaryDirectory(prefix="cnnlab-fine-tune-") as scratch:
        work = Path(args.work or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        results["source"] = source = _source(args, work)
        results["target"] = target = _targets(args, work, counts)
        results["runs"] = runs = []
        for n in counts:
            for seed in seeds:
                for method in METHODS:
                    say(f"== N={n} seed {seed} {method}")
                    try:
                        runs.append(_target_run(args, work, source, target, n, seed, method))
                    except Exception as exc:  # one run failing still prints the others
                        say(f"failed: {exc}")
                        runs.append({"n": n, "seed": seed, "method": method, "error": f"{exc}"})
    _print_tables(results, counts, seeds)
    write_json(args.json, results)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--counts", default="10,30,100", help="pictures a class in train/, comma-separated"
    )
    parser.add_argument("--seeds", default="1,2,3", help="cnnlab's --seed for each pair of runs")
    parser.add_argument("--epochs", type=int, default=40, help="every target run's --epochs")
    parser.add_argument(
        "--head-epochs", type=int, help="fine-tuned runs' --head-epochs (default: cnnlab's, 2)"
    )
    parser.add_argument("--task", choices=("shape", "colour"), default="shape")
    parser.add_argument("--test-count", type=int, default=100, help="pictures a class in test/")
    parser.add_argument(
        "--target-seed", type=int, default=1, help="the generator's seed, target pictures"
    )
    parser.add_argument("--source", type=Path, help="a trained run to start from (reused)")
    parser.add_argument("--source-count", type=int, default=3200, help="pictures, source folder")
    parser.add_argument(
        "--source-seed", type=int, default=0, help="the generator's seed, source folder"
    )
    parser.add_argument(
        "--source-epochs", type=int, help="the source run's --epochs (default: the recipe's)"
    )
    parser.add_argument(
        "--image-size", default="64", help="the source run's --image-size (and so the targets')"
    )
    parser.add_argument(
        "--source-args", default="", help='more flags for the source\'s `cnnlab train`: "--seed 2"'
    )
    parser.add_argument("--train-args", default="", help="more flags for every target run")
    parser.add_argument(
        "--init-args", default="", help='more flags for the fine-tuned runs: "--freeze-until conv1"'
    )
    parser.add_argument("--work", type=Path, help="keep generated folders and runs here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    return parser


# -- folders -------------------------------------------------------------------------------------


def _generate(root: Path, count: int, seed: int) -> float | None:
    """`signs.make_signs(root, count, seed)`; seconds taken, or None when `root` already holds
    what this script made with the same count and seed."""
    sys.path.insert(0, str(HERE.parent))
    import signs

    marker = root / ".made.json"  # hidden: not a class folder, not an image
    wanted = {"count": count, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        say(f"reusing {root}")
        return None
    if root.exists():
        shutil.rmtree(root)
    say(f"generating {count:,} pictures in {root}")
    start = time.perf_counter()
    signs.make_signs(root, count, seed)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(wanted))
    return round(seconds, 1)


def _members(task: str) -> dict[str, list[str]]:
    """The target's classes, each with the source classes (signs' folders) it takes pictures
    from."""
    sys.path.insert(0, str(HERE.parent))
    import signs

    if task == "shape":
        return {s: [f"{c}_{s}" for c in signs.COLOURS] for s in sorted(signs.SHAPES)}
    return {c: [f"{c}_{s}" for s in signs.SHAPES] for c in sorted(signs.COLOURS)}


def _targets(args: argparse.Namespace, work: Path, counts: list[int]) -> dict[str, Any]:
    """One folder per N: train/<class>/ with the first N pictures a class (after the test ones),
    test/<class>/ with the same `--test-count` pictures for every N (hard links into a pool)."""
    members = _members(args.task)
    wanted = max(counts) + args.test_count
    per_member = max(math.ceil(wanted / len(m)) for m in members.values())
    pool = work / f"pool-{per_member * 8}-seed{args.target_seed}"
    seconds = _generate(pool, per_member * 8, args.target_seed)
    folders = {}
    for n in counts:
        folder = work / f"target-{args.task}-{n}"
        if folder.exists():
            shutil.rmtree(folder)
        for name, sources in members.items():
            files = _interleave([sorted((pool / s).iterdir()) for s in sources])
            test, train = files[: args.test_count], files[args.test_count : args.test_count + n]
            for split, chosen in (("test", test), ("train", train)):
                (folder / split / name).mkdir(parents=True)
                for path in chosen:
                    link(path, folder / split / name / path.name)
        folders[n] = str(folder)
    return {
        "task": args.task,
        "classes": {k: list(v) for k, v in members.items()},
        "pool": str(pool),
        "pool_seed": args.target_seed,
        "generate_seconds": seconds,
        "folders": folders,
        "test_per_class": args.test_count,
    }


def _interleave(lists: list[list[Path]]) -> list[Path]:
    """Round robin, so any first k hold each source class about equally."""
    out = []
    for index in range(max(len(x) for x in lists)):
        out.extend(x[index] for x in lists if index < len(x))
    return out


# -- runs ----------------------------------------------------------------------------------------


def _evaluate(run: Path) -> dict[str, Any]:
    done = subprocess.run(
        cnnlab("evaluate", str(run), "--json"), capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"cnnlab evaluate {run}: exit status {done.returncode}\n{done.stderr}")
    return json.loads(done.stdout[done.stdout.index("{") :])


def _state(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text())


def _source(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The run the fine-tuned runs start from: `--source`, or one trained here (reused from
    `--work` when trained there with the same command)."""
    if args.source:
        run = args.source.resolve()
        if not (run / "run.json").is_file():
            raise SystemExit(f"--source {args.source}: not a run folder (no run.json)")
        metrics_file = run / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        return _describe_source(run, metrics, {"reused": True, "command": None})
    folder = work / f"source-{args.source_count}-seed{args.source_seed}"
    seconds = _generate(folder, args.source_count, args.source_seed)
    runs = work / "runs"
    run = runs / "source"
    command = [
        "train", "--dataset", str(folder), "--image-size", args.image_size,
        "--runs-dir", str(runs), "--name", "source", "--overwrite",
        *(["--epochs", str(args.source_epochs)] if args.source_epochs else []),
        *shlex.split(args.source_args),
    ]  # fmt: skip
    record = run.parent / "source-command.json"
    finished = (run / "run.json").is_file() and _state(run).get("status") == "finished"
    same = record.is_file() and json.loads(record.read_text()) == command
    if seconds is None and finished and same and (run / "metrics.json").is_file():
        say(f"reusing the source run {run}")
        metrics = json.loads((run / "metrics.json").read_text())
        return _describe_source(run, metrics, {"reused": True, "command": command})
    runs.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    say("== source")
    figures = run_child(cnnlab(*command), work / "source-train.log")
    record.write_text(json.dumps(command))
    metrics = _evaluate(run)
    return _describe_source(
        run, metrics, {**figures, "reused": False, "command": command, "generate_seconds": seconds}
    )


def _describe_source(run: Path, metrics: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    state = _state(run)
    shape = state["input_shape"]
    return {
        **extra,
        "run": str(run),
        "dataset": state.get("dataset"),
        "class_names": state.get("class_names"),
        "input_shape": shape,
        "image_size": f"{shape[0]}x{shape[1]}",
        "color": "grayscale" if shape[-1] == 1 else "rgb",
        "train_images": state.get("train_images"),
        "train_seconds": state.get("train_seconds"),
        "epochs_run": state.get("epochs_run"),
        "test_accuracy": metrics.get("test_accuracy"),
        "test_images": metrics.get("test_images"),
    }


def _target_run(
    args: argparse.Namespace,
    work: Path,
    source: dict[str, Any],
    target: dict[str, Any],
    n: int,
    seed: int,
    method: str,
) -> dict[str, Any]:
    runs = work / "runs"
    name = f"{args.task}-{n}-{method}-seed{seed}"
    command = [
        "train", "--dataset", target["folders"][n], "--image-size", source["image_size"],
        "--color", source["color"], "--epochs", str(args.epochs), "--seed", str(seed),
        "--runs-dir", str(runs), "--name", name, "--overwrite", *shlex.split(args.train_args),
    ]  # fmt: skip
    if method == "fine-tune":
        command += ["--init", source["run"]]
        if args.head_epochs is not None:
            command += ["--head-epochs", str(args.head_epochs)]
        command += shlex.split(args.init_args)
    figures = run_child(cnnlab(*command), work / f"{name}.log")
    run = runs / name
    state = _state(run)
    metrics = _evaluate(run)
    return {
        **figures,
        "n": n,
        "seed": seed,
        "method": method,
        "run": str(run),
        "command": shlex.join(["cnnlab", *command]),
        "test_accuracy": metrics["test_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "test_images": metrics["test_images"],
        "train_images": state.get("train_images"),
        "validation_images": state.get("validation_images"),
        "train_seconds": state.get("train_seconds"),
        "epochs_run": state.get("epochs_run"),
        "best_epoch": state.get("best_epoch"),
        "started_from": state.get("started_from") or {},
    }


# -- the tables ----------------------------------------------------------------------------------


def _print_tables(results: dict[str, Any], counts: list[int], seeds: list[int]) -> None:
    print(f"CPU: {results['cpu']} ({results['cores']} cores)")
    source, target = results["source"], results["target"]
    how = "reused" if source.get("reused") else f"trained in {source['wall_seconds']:.0f} s"
    command = source.get("command")
    print(
        f"source: {source['run']} ({how}"
        + (f": `{shlex.join(['cnnlab', *command])}`" if command else "")
        + f"): {len(source['class_names'] or [])} classes, {source['train_images']:,} training "
        f"pictures, {source['image_size']} {source['color']}, epochs run {source['epochs_run']}, "
        f"{source['train_seconds']:.0f} s of training, test accuracy "
        f"{pct(source['test_accuracy'])}"
    )
    classes = ", ".join(f"{k} ({' + '.join(v)})" for k, v in target["classes"].items())
    settings = results["settings"]
    print(
        f"target: the {target['task']} task, {len(target['classes'])} classes: {classes}; new "
        f"pictures (seed {target['pool_seed']}); N a class in train/ (about a tenth held out for "
        f"validation), the same {target['test_per_class']} a class in test/; "
        f"--epochs {settings['epochs']} for every run"
    )
    runs = results["runs"]
    failed = [r for r in runs if "error" in r]
    print()
    heads = " | ".join(f"seed {s}" for s in seeds)
    print(
        f"| images a class | method | test accuracy, mean | {heads} | macro F1, mean | "
        "training s, mean | epochs run, mean |"
    )
    print("|---:|---|---:|" + "---:|" * len(seeds) + "---:|---:|---:|")
    gains = []
    for n in counts:
        means = {}
        for method in METHODS:
            rows = [r for r in runs if r["n"] == n and r["method"] == method and "error" not in r]
            by_seed = {r["seed"]: r for r in rows}
            means[method] = mean([r["test_accuracy"] for r in rows])
            cells = " | ".join(
                pct(by_seed[s]["test_accuracy"]) if s in by_seed else "failed" for s in seeds
            )
            seconds = mean([r["train_seconds"] for r in rows])
            epochs = mean([r["epochs_run"] for r in rows])
            f1 = mean([r["macro_f1"] for r in rows])
            print(
                f"| {n} | {METHOD_WORDS[method]} | {pct(means[method])} | {cells} | "
                f"{'-' if f1 is None else f'{f1:.3f}'} | "
                f"{'-' if seconds is None else f'{seconds:.1f} s'} | "
                f"{'-' if epochs is None else f'{epochs:.1f}'} |"
            )
        wins = sum(
            1
            for s in seeds
            if _accuracy(runs, n, s, "fine-tune") is not None
            and _accuracy(runs, n, s, "scratch") is not None
            and _accuracy(runs, n, s, "fine-tune") > _accuracy(runs, n, s, "scratch")
        )
        gains.append((n, means, wins))
    print()
    print("| images a class | fine-tuned minus from scratch (mean) | seeds fine-tuned ahead |")
    print("|---:|---:|---:|")
    for n, means, wins in gains:
        a, b = means["fine-tune"], means["scratch"]
        diff = "-" if a is None or b is None else f"{100 * (a - b):+.1f} points"
        print(f"| {n} | {diff} | {wins} of {len(seeds)} |")
    for r in failed:
        print(f"\nN={r['n']} seed {r['seed']} {r['method']}: failed: {r['error']}")


def _accuracy(runs: list[dict[str, Any]], n: int, seed: int, method: str) -> float | None:
    for r in runs:
        if r["n"] == n and r["seed"] == seed and r["method"] == method and "error" not in r:
            return r["test_accuracy"]
    return None


if __name__ == "__main__":
    main()
