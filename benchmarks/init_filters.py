"""Do "known good" first-layer filters help? random vs classic vs whitening, over seeds.

The notes claim a CNN's "initial filters are not random, they start with a set of known good
filters". Keras' are random (glorot_uniform). This trains the seed model from each starting point
with the same seeds and budget, and prints validation accuracy after each epoch (speed of
learning) and the test accuracy of the best epoch (where it ends up).

    .venv/bin/python benchmarks/init_filters.py [--seeds 1 2 3] [--epochs 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from cnnlab.config import INIT_FILTERS, load_config
from cnnlab.evaluation import evaluate
from cnnlab.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/init-filters"))
    args = parser.parse_args()

    results: dict[str, list[dict[str, object]]] = {method: [] for method in INIT_FILTERS}
    for seed in args.seeds:
        for method in INIT_FILTERS:  # alternate the contenders within each seed
            config = load_config(
                overrides={
                    "model.init_filters": method,
                    "train.seed": seed,
                    "train.epochs": args.epochs,
                    "train.patience": 0,
                    "train.reduce_lr_patience": 0,
                    "data.limit": args.limit,
                    "run.runs_dir": str(args.out),
                    "run.name": f"{method}-seed{seed}",
                }
            )
            result = train(config)
            metrics = evaluate(result.run_dir)
            results[method].append(
                {
                    "seed": seed,
                    "val_accuracy": [row["val_accuracy"] for row in result.history],
                    "epoch_seconds": [row["epoch_seconds"] for row in result.history],
                    "test_accuracy": metrics["test_accuracy"],
                }
            )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, args.epochs))


def _mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def table(results: dict[str, list[dict[str, object]]], epochs: int) -> str:
    shown = sorted({1, 2, 3, epochs} & set(range(1, epochs + 1)))
    head = ["init"] + [f"val acc % after epoch {e}" for e in shown] + ["test acc % (best epoch)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, runs in results.items():
        cells = [method]
        for epoch in shown:
            cells.append(_mean_sd([r["val_accuracy"][epoch - 1] for r in runs]))  # type: ignore[index]
        cells.append(_mean_sd([r["test_accuracy"] for r in runs]))  # type: ignore[misc]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = len(next(iter(results.values())))
    lines.append(
        f"\nmean ± standard deviation over {seeds} seeds; {epochs} epochs each, "
        "no early stopping or schedule"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
