"""The benchmark's results as one aligned plain-text table, section by section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(results: dict[str, Any]) -> str:
    """Render `run_bench`'s results: training, time to accuracy, inference, start-up, notes."""
    machine, settings, model = results["machine"], results["settings"], results["model"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    first = results["training"][0]
    sets = ", ".join(machine.get("cpu_instruction_sets") or []) or "none of AVX2/AVX-512/SVE/BF16"
    header = [
        f"cnnlab bench{' --quick' if settings['quick'] else ''}: {model['name']} "
        f"({model['params']:,} params) on Fashion-MNIST, {machine['date']}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, {versions}; "
        f"Keras backend {machine.get('keras_backend', 'tensorflow')}",
        f"CPU instruction sets: {sets} ({machine.get('architecture', '?')})",
        _precision_line(results.get("precision")),
        f"training: {first['images']:,} images, batch {settings['batch_size_training']}, "
        f"one timed epoch after a warm-up, median of {settings['repeats']} alternated repeats",
        f"FLOPs: {model['forward_flops_per_image'] / 1e6:.2f} MFLOP/image forward, "
        f"{model['train_flops_per_image'] / 1e6:.2f} training ({model['flops_convention']})",
        f"peak: {results['peak']['gflops']:.0f} GFLOP/s ({results['peak']['method']})",
    ]
    training = _section(
        ["training", "images/s", "x plain Keras", "GFLOP/s", "% of peak", "peak RSS (MiB)", "how"],
        [
            [
                row["label"],
                f"{row['images_per_s']:,.0f}",
                f"{row['ratio_to_keras']:.2f}",
                f"{row['gflops']:.1f}",
                f"{row['percent_of_peak']:.1f}",
                f"{row['peak_rss_mib']:,.0f}",
                row["note"],
            ]
            for row in results["training"]
        ],
    )
    tta = results["time_to_accuracy"]
    accuracy = _section(
        [
            f"time to {100 * tta['target']:.0f}% test accuracy",
            "reached",
            "epochs",
            "train (s)",
            "test evals (s)",
            "best test acc",
            "peak RSS (MiB)",
        ],
        [
            [
                f"{row['recipe']} recipe ({row['train_images']:,} images)",
                "yes" if row["reached"] else f"not in {tta['max_epochs']} epochs",
                str(row["epochs"]),
                f"{row['seconds']:.1f}" if row["reached"] else "-",
                f"{row['eval_seconds']:.1f}",
                f"{row['best_test_accuracy']:.4f}",
                f"{row['peak_rss_mib']:,.0f}",
            ]
            for row in tta["rows"]
        ],
    )
    inference = _section(
        ["inference", "call", "1 image p50 (ms)", "p99 (ms)", "batch images/s"],
        [
            [
                row["format"],
                row["call"],
                f"{row['latency_p50_ms']:.2f}",
                f"{row['latency_p99_ms']:.2f}",
                f"{row['batch_images_per_s']:,.0f} (batch {row['batch_size']})",
            ]
            for row in results["inference"]["rows"]
        ],
    )
    startup = _section(
        ["start-up", "median (s)", "target (s)"],
        [
            [
                row["command"],
                f"{row['median_s']:.3f}",
                "-" if row["target_s"] is None else f"< {row['target_s']}",
            ]
            for row in results["startup"]
        ],
    )
    notes = [f"note: {note}" for note in results["notes"]]
    parts = ["\n".join(header), training, accuracy, inference, startup, "\n".join(notes)]
    return "\n\n".join(part for part in parts if part) + "\n"


def _precision_line(precision: dict[str, Any] | None) -> str:
    if not precision:
        return "precision: not recorded"
    how = (
        f"forced with --precision {precision['requested']}"
        if precision["requested"] != "auto"
        else f"auto: {precision['reason']}"
    )
    return (
        f"precision of cnnlab's default-recipe rows: {precision['policy']} ({how}); "
        "plain Keras, PyTorch and the seed recipe: float32"
    )


def _section(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned: the first and text columns to the left, numbers to the right."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if number else cell.ljust(width)
            for cell, width, number in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _is_number(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "", 1).removeprefix("< ").isdigit() or cell == "-"
