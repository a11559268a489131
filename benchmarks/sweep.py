"""Compare training recipes on the validation split, several seeds each, runs in parallel.

Each candidate is a name and the `cnnlab train` flags that define it. Every candidate is trained
with every seed (all runs at once, `--parallel` at a time), and candidates are ranked by their
mean best validation accuracy: the test set plays no part in the choice. Then each run is
evaluated on the test set (plain and with --tta) so the winner's test accuracy can be reported.
A JSON file with every run's history is rewritten as runs progress, so a sweep cut short still
says how far it got.

    python benchmarks/sweep.py --seeds 1 2 3 --out runs/sweep \\
        "adam: --model resnet --optimizer adam --learning-rate 0.003" \\
        "adamw: --model resnet --optimizer adamw --learning-rate 0.003"

On a GPU machine without TensorFlow, set KERAS_BACKEND=jax (and
XLA_PYTHON_CLIENT_PREALLOCATE=false so that parallel runs share the GPU's memory).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", help='"name: cnnlab train flags"')
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="run folders")
    parser.add_argument("--json", type=Path, help="results file (default: OUT/sweep.json)")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    candidates = dict(_parse_candidate(text) for text in args.candidates)
    results_path = args.json or args.out / "sweep.json"
    jobs = [(name, seed) for seed in args.seeds for name in candidates]
    runs: dict[str, dict[str, Any]] = {
        _run_name(name, seed): {"candidate": name, "seed": seed, "status": "waiting"}
        for name, seed in jobs
    }
    started = time.time()
    stop = threading.Event()

    def snapshot() -> None:
        for run_name, record in runs.items():
            record["history"] = _history(args.out / run_name)
        summary = _summary(runs, candidates)
        payload = {"elapsed_s": round(time.time() - started, 1), "candidates": summary}
        results_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**payload, "runs": runs}, indent=1) + "\n")
        tmp.replace(results_path)

    def keep_writing() -> None:
        while not stop.wait(20):
            snapshot()

    def run(job: tuple[str, int]) -> None:
        name, seed = job
        run_name = _run_name(name, seed)
        record = runs[run_name]
        record["status"] = "training"
        flags = [*candidates[name], "--seed", str(seed), "--patience", "0"]
        command = [*_cnnlab(), "train", *flags, "--name", run_name, "--runs-dir", str(args.out)]
        log = args.out / f"{run_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with log.open("w") as handle:
            code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
        record["wall_s"] = round(time.time() - t0, 1)
        if code != 0:
            record["status"] = f"failed ({code}); see {log}"
            return
        state = json.loads((args.out / run_name / "run.json").read_text())
        record.update(
            status="evaluating",
            train_seconds=state.get("train_seconds"),
            best_epoch=state.get("best_epoch"),
            val_accuracy=state.get("best_metrics", {}).get("val_accuracy"),
        )
        evaluated = subprocess.run(
            [*_cnnlab(), "evaluate", str(args.out / run_name), "--tta", "--json"],
            capture_output=True,
            text=True,
        )
        if evaluated.returncode == 0:
            metrics = json.loads(evaluated.stdout)
            record["test_accuracy"] = metrics.get("test_accuracy")
            record["test_accuracy_tta"] = metrics.get("tta", {}).get("test_accuracy")
        record["status"] = "done" if evaluated.returncode == 0 else "evaluation failed"

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        list(pool.map(run, jobs))
    stop.set()
    snapshot()
    _print_table(_summary(runs, candidates))
    print(f"results: {results_path}")


def _parse_candidate(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition(":")
    if not sep or not name.strip():
        sys.exit(f'a candidate looks like "name: --flag value ...", got {text!r}')
    return name.strip(), shlex.split(flags)


def _run_name(candidate: str, seed: int) -> str:
    return f"{candidate}-s{seed}"


def _cnnlab() -> list[str]:
    return [sys.executable, "-m", "cnnlab"]


def _history(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            try:
                rows.append({k: float(v) for k, v in row.items() if k and v})
            except ValueError:
                continue
        return rows


def _summary(runs: dict[str, dict[str, Any]], candidates: dict[str, list[str]]) -> list[dict]:
    """One row per candidate, ranked by mean best validation accuracy (never by test)."""
    rows = []
    for name, flags in candidates.items():
        mine = [r for r in runs.values() if r["candidate"] == name]
        best_val = [max(h["val_accuracy"] for h in r["history"]) for r in mine if r["history"]]
        row: dict[str, Any] = {
            "candidate": name,
            "flags": shlex.join(flags),
            "seeds": len(best_val),
            "epochs_done": [len(r["history"]) for r in mine],
            "val_mean": statistics.fmean(best_val) if best_val else None,
            "val_sd": statistics.stdev(best_val) if len(best_val) > 1 else None,
        }
        for key in ("test_accuracy", "test_accuracy_tta", "train_seconds"):
            values = [r[key] for r in mine if r.get(key) is not None]
            row[f"{key}_mean"] = statistics.fmean(values) if values else None
            row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return sorted(rows, key=lambda r: -(r["val_mean"] or 0.0))


def _print_table(rows: list[dict[str, Any]]) -> None:
    def pct(mean: float | None, sd: float | None) -> str:
        if mean is None:
            return "-"
        return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")

    print("| candidate | runs | val acc % | test acc % | test acc, TTA % | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        seconds = r["train_seconds_mean"]
        print(
            f"| {r['candidate']} | {r['seeds']} | {pct(r['val_mean'], r['val_sd'])} | "
            f"{pct(r['test_accuracy_mean'], r['test_accuracy_sd'])} | "
            f"{pct(r['test_accuracy_tta_mean'], r['test_accuracy_tta_sd'])} | "
            f"{'-' if seconds is None else f'{seconds:.0f}'} |"
        )


if __name__ == "__main__":
    main()
