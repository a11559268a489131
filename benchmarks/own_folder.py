"""A folder of your own pictures: cnnlab's defaults against plain Keras, side by side (issue 27).

One run generates a seeded RGB folder where colour is half of the class (`signs.make_signs`:
8 classes, red or green x circle, triangle, square, cross; 40-220 px; JPEG, PNG, RGBA,
palette, WebP, EXIF-turned JPEG) and measures, each in its own process:

- cnnlab: `cnnlab train --dataset DIR --seed S` with its defaults (the photos recipe, image
  size and colour chosen from the data), then `cnnlab evaluate RUN --json`: test accuracy,
  training seconds (run.json), the process's wall seconds and peak RSS, the chosen input, the
  epochs run.
- keras: the notes' CNN (Conv2D 64 same, pool, Conv2D 64, pool, Conv2D 32, pool, Dense 128,
  softmax; adam) in plain Keras on `keras.utils.image_dataset_from_directory` at 64x64 RGB,
  `--epochs-plain` epochs, no validation, as the notes train. It reads exactly cnnlab's
  training and test files (cnnlab's own split, `scan(DIR, seed=S)`, with the run's
  --validation-split, as folders of symlinks; a --limit given to cnnlab is not mirrored); the
  loader skips what it does not list (WebP) without a word, so the files it read are counted.
- keras-strong: what a careful Keras user writes: the same loader, augmentation (flip, zoom,
  shift, brightness, contrast), batch-normalised convolutions at 32, 64, 128 and 256 filters,
  global average pooling, dropout, up to `--epochs-keras` epochs with EarlyStopping on the
  validation loss (cnnlab's validation files), best weights restored.
- pipeline: cnnlab's input pipeline (FolderBatches over the training split with the run's
  recipe, one shuffled epoch, its default threads) in images/s, against the training step of
  the photos model at that size and precision (`fit` on `--pipeline-steps` decoded batches
  held in memory: the best of three epochs after a warm-up one) in images/s. Pipeline / step
  above 1: decoding keeps up with training; on 2 cores the two share the CPU, so step /
  pipeline is the share of the time decoding takes.
- memory: a large folder (`--large-count` pictures of `--large-size` px, the same generator)
  through `cnnlab train --dataset LARGE --image-size N --epochs 1`, stopped by a callback at
  the end of the compiled call (16 steps) that reaches `--memory-steps` steps (or the epoch's
  end): seconds from the process's start to the first training step and to the end of the
  first compiled call, the peak RSS then, and the whole process's peak RSS (its own, by wait4;
  Keras still validates and cnnlab saves after the stop), beside the folder's size as float32
  (N x H x W x 3 x 4 bytes). The folder was just written, so it is in the page cache.

    python benchmarks/own_folder.py                               # everything (about an hour)
    python benchmarks/own_folder.py --only cnnlab,keras --json own.json
    python benchmarks/own_folder.py --only memory --large-dir /tmp/large   # reuse a folder
    python benchmarks/own_folder.py --count 240 --epochs-plain 2 --epochs-keras 2 \\
        --cnnlab-args "--epochs 2" --large-count 600 --large-size 96     # a quick check

The generated folders go to a temporary folder unless `--work DIR` keeps them (a folder made
with the same count and seed is reused). Keras' parts train in float32 (its default); cnnlab
picks its precision (mixed_bfloat16 on CPUs with bfloat16 instructions), shown in the tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from children import machine, pct, run_child, say, write_json

PARTS = ("cnnlab", "keras", "keras-strong", "pipeline", "memory")
KERAS_SIZE = (64, 64)
KERAS_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png"})
"""What `image_dataset_from_directory` lists (Keras 3); anything else is passed over."""
BATCH = 32
STEPS_PER_EXECUTION = 16  # cnnlab's "auto" on the TensorFlow and JAX backends
HERE = Path(__file__).resolve()
GiB = 1024**3


# -- the parent: generate, launch, tabulate ----------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        _worker(sys.argv[2:])
        return
    args = _parser().parse_args()
    parts = _parts(args.only)

    results: dict[str, Any] = machine(vars(args))
    with tempfile.TemporaryDirectory(prefix="cnnlab-own-folder-") as scratch:
        work = Path(args.work or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if set(parts) - {"memory"}:
            dataset = _dataset(args, work, results)
        for part in parts:
            say(f"== {part}")
            try:
                if part == "cnnlab":
                    results[part] = _cnnlab(args, dataset, work)
                elif part in ("keras", "keras-strong"):
                    results[part] = _keras(args, dataset, work, strong=part == "keras-strong")
                elif part == "pipeline":
                    results[part] = _pipeline(args, dataset, work, results.get("cnnlab"))
                else:
                    results[part] = _memory(args, work)
            except Exception as exc:  # one part failing still prints the others
                results[part] = {"error": f"{type(exc).__name__}: {exc}"}
                say(f"{part} failed: {exc}")
    _print_tables(results, parts)
    write_json(args.json, results)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"parts to run, comma-separated ({','.join(PARTS)})"
    )
    parser.add_argument("--count", type=int, default=3200, help="pictures to generate")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument(
        "--train-seed", type=int, default=1, help="cnnlab's --seed; Keras' seed; the split"
    )
    parser.add_argument("--dataset", type=Path, help="use this folder instead of generating one")
    parser.add_argument("--work", type=Path, help="keep generated folders and runs here")
    parser.add_argument(
        "--cnnlab-args",
        default="",
        help='more flags for `cnnlab train`: "--epochs 2" (or --cnnlab-args=--epochs=2)',
    )
    parser.add_argument(
        "--epochs-plain", type=int, default=10, help="the notes' CNN's epochs (keras)"
    )
    parser.add_argument(
        "--epochs-keras", type=int, default=40, help="the stronger Keras pipeline's most epochs"
    )
    parser.add_argument("--patience", type=int, default=8, help="its EarlyStopping patience")
    parser.add_argument(
        "--pipeline-steps", type=int, default=32, help="training steps the step timing repeats"
    )
    parser.add_argument("--large-count", type=int, default=20000, help="pictures, memory part")
    parser.add_argument("--large-size", type=int, default=160, help="their side and --image-size")
    parser.add_argument("--large-dir", type=Path, help="the large folder (made if missing)")
    parser.add_argument(
        "--memory-steps", type=int, default=64, help="training steps before the run is stopped"
    )
    parser.add_argument("--memory-args", default="", help="more flags for that `cnnlab train`")
    parser.add_argument("--json", type=Path, help="write every figure here")
    return parser


def _parts(only: str) -> list[str]:
    chosen = [p.strip() for p in only.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {', '.join(unknown)}; choose from {PARTS}")
    return [p for p in PARTS if p in chosen]


def _dataset(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> Path:
    if args.dataset:
        results["dataset"] = {"folder": str(args.dataset), "generated": False}
        return args.dataset.resolve()
    root = work / f"signs-{args.count}-seed{args.seed}"
    seconds = _generate(root, args.count, args.seed, size=None)
    results["dataset"] = {
        "folder": str(root), "generated": True, "count": args.count, "seed": args.seed,
        "generate_seconds": seconds,
    }  # fmt: skip
    return root


def _generate(root: Path, count: int, seed: int, size: int | None) -> float | None:
    """`signs.make_signs` into `root` (pictures of `size` px a side if given). Seconds taken;
    None when `root` is used as it is: made by this script with the same count, seed and size,
    or a folder this script did not make (never deleted)."""
    sys.path.insert(0, str(HERE.parent))
    import signs

    marker = root / ".made.json"  # hidden: not a class folder, not an image
    wanted = {"count": count, "seed": seed, "size": size}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        say(f"reusing {root}")
        return None
    if root.is_dir() and any(root.iterdir()) and not marker.is_file():
        say(f"{root}: not made by this script; using its pictures as they are")
        return None
    if root.exists():  # made by this script with other settings
        shutil.rmtree(root)
    say(f"generating {count:,} pictures in {root}")
    saved = signs.SIZE_RANGE
    if size is not None:  # make_signs reads the module's range for each picture it draws
        signs.SIZE_RANGE = (size, size)
    try:
        start = time.perf_counter()
        signs.make_signs(root, count, seed)
        seconds = time.perf_counter() - start
    finally:
        signs.SIZE_RANGE = saved
    marker.write_text(json.dumps(wanted))
    return seconds


def _cnnlab(args: argparse.Namespace, dataset: Path, work: Path) -> dict[str, Any]:
    runs = work / "runs"
    run = runs / "cnnlab"
    command = [
        sys.executable, "-m", "cnnlab", "train", "--dataset", str(dataset),
        "--seed", str(args.train_seed), "--runs-dir", str(runs), "--name", "cnnlab",
        "--overwrite", *shlex.split(args.cnnlab_args),
    ]  # fmt: skip
    figures = run_child(command, work / "cnnlab-train.log")
    state = json.loads((run / "run.json").read_text())
    evaluated = subprocess.run(
        [sys.executable, "-m", "cnnlab", "evaluate", str(run), "--json"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    metrics = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    epoch_seconds = [row["epoch_seconds"] for row in _history(run)]
    median_epoch = statistics.median(epoch_seconds) if epoch_seconds else float("nan")
    return {
        **figures,
        "run": str(run),
        "command": shlex.join(["cnnlab", *command[3:]]),
        "test_accuracy": metrics["test_accuracy"],
        "test_images": metrics["test_images"],
        "train_seconds": state.get("train_seconds"),
        "input_shape": state.get("input_shape"),
        "input_recipe": state.get("input_recipe"),
        "precision": (state.get("precision") or {}).get("policy"),
        "epochs_run": state.get("epochs_run"),
        "best_epoch": state.get("best_epoch"),
        "train_images": state.get("train_images"),
        "validation_images": state.get("validation_images"),
        "unreadable_images": len(state.get("unreadable_images") or {}),
        "median_epoch_seconds": median_epoch,
        "fit_images_per_second": state.get("train_images", 0) / median_epoch,
    }


def _history(run: Path) -> list[dict[str, float]]:
    path = run / "history.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _keras(args: argparse.Namespace, dataset: Path, work: Path, *, strong: bool) -> dict[str, Any]:
    links = work / f"keras-split-seed{args.train_seed}"
    validation = _validation_split(args.cnnlab_args)
    listed, class_names = _link_splits(dataset, args.train_seed, validation, links)
    name = "keras-strong" if strong else "keras"
    spec = {
        "links": str(links), "class_names": class_names, "seed": args.train_seed,
        "strong": strong, "epochs": args.epochs_keras if strong else args.epochs_plain,
        "patience": args.patience, "out": str(work / f"{name}.json"),
    }  # fmt: skip
    spec_file = work / f"{name}-spec.json"
    spec_file.write_text(json.dumps(spec))
    figures = run_child(
        [sys.executable, str(HERE), "_worker", "keras", str(spec_file)], work / f"{name}.log"
    )
    found = json.loads(Path(spec["out"]).read_text())
    read = found["files_read"]
    skipped = {split: listed[split] - read[split] for split in read}
    return {**figures, **found, "files_listed": listed, "skipped": skipped}


def _validation_split(cnnlab_args: str) -> float:
    """The --validation-split the cnnlab run is given (cnnlab's default otherwise), so the other
    parts split the folder exactly as it does."""
    from cnnlab.data.folders import VALIDATION_FRACTION

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--validation-split", type=float, default=VALIDATION_FRACTION)
    return parser.parse_known_args(shlex.split(cnnlab_args))[0].validation_split


def _link_splits(
    dataset: Path, seed: int, validation: float, dest: Path
) -> tuple[dict[str, int], list[str]]:
    """cnnlab's split of `dataset` (`scan(dataset, seed=seed)`) as folders of symlinks,
    `dest/<split>/<class>/`, so a directory loader reads exactly those files."""
    from cnnlab.data.folders import scan

    data = scan(dataset, seed=seed, validation_fraction=validation)
    if dest.exists():
        shutil.rmtree(dest)
    listed = {}
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        for label in data.class_names:
            (dest / name / label).mkdir(parents=True)
        for index, (path, label) in enumerate(zip(split.paths, split.labels, strict=True)):
            link = dest / name / data.class_names[label] / f"{index:06d}-{path.name}"
            link.symlink_to(Path(path).resolve())
        listed[name] = len(split)
    return listed, list(data.class_names)


def _pipeline(
    args: argparse.Namespace, dataset: Path, work: Path, cnnlab: dict[str, Any] | None
) -> dict[str, Any]:
    ran = cnnlab if cnnlab and "error" not in cnnlab else None
    spec = {
        "dataset": str(dataset), "seed": args.train_seed, "steps": args.pipeline_steps,
        "validation": _validation_split(args.cnnlab_args),
        "recipe": ran["input_recipe"] if ran else None,
        "precision": ran["precision"] if ran else None,
        "out": str(work / "pipeline.json"),
    }  # fmt: skip
    spec_file = work / "pipeline-spec.json"
    spec_file.write_text(json.dumps(spec))
    figures = run_child(
        [sys.executable, str(HERE), "_worker", "pipeline", str(spec_file)], work / "pipeline.log"
    )
    found = json.loads(Path(spec["out"]).read_text())
    if ran:
        found["fit_images_per_second"] = ran["fit_images_per_second"]
    return {**figures, **found}


def _memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = args.large_size
    root = (args.large_dir or work / f"large-{args.large_count}-{size}px").resolve()
    seconds = _generate(root, args.large_count, args.seed, size=size)
    out = work / "memory.json"
    out.unlink(missing_ok=True)
    runs = work / "runs"
    cnnlab_args = [
        "train", "--dataset", str(root), "--image-size", str(size), "--epochs", "1",
        "--seed", str(args.train_seed), "--runs-dir", str(runs), "--name", "large",
        "--overwrite", *shlex.split(args.memory_args),
    ]  # fmt: skip
    command = [
        sys.executable, str(HERE), "_worker", "memory", str(out), str(args.memory_steps), "--",
        *cnnlab_args,
    ]  # fmt: skip
    figures = run_child(command, work / "memory.log")
    found = json.loads(out.read_text()) if out.is_file() else {}
    start = figures["started_at"]
    pictures = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {
        **figures,
        "folder": str(root),
        "pictures": pictures,
        "generate_seconds": seconds,
        "command": shlex.join(["cnnlab", *cnnlab_args]),
        "float32_bytes": pictures * size * size * 3 * 4,
        "seconds_to_first_step": _since(found.get("first_step_at"), start),
        "seconds_to_first_call_done": _since(found.get("first_call_done_at"), start),
        "seconds_to_stop": _since(found.get("stopped_at"), start),
        "steps_trained": found.get("steps"),
        "rss_at_stop_bytes": found.get("rss_at_stop_bytes"),
    }


def _since(moment: float | None, start: float) -> float | None:
    return None if moment is None else round(moment - start, 1)


# -- the tables ----------------------------------------------------------------------------------


def _print_tables(results: dict[str, Any], parts: list[str]) -> None:
    print(f"CPU: {results['cpu']} ({results['cores']} cores)")
    data = results.get("dataset")
    if data:
        made = (
            f"generated: {data['count']:,} pictures, seed {data['seed']}"
            if data["generated"]
            else "given"
        )
        print(f"folder: {data['folder']} ({made})")
    for part in parts:
        print()
        found = results.get(part, {})
        if "error" in found:
            print(f"**{part}**: failed: {found['error']}")
            continue
        {
            "cnnlab": _table_cnnlab,
            "keras": _table_keras,
            "keras-strong": _table_keras,
            "pipeline": _table_pipeline,
            "memory": _table_memory,
        }[part](part, found)
    print()
    _table_summary(results, parts)


def _num(value: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GiB:.2f} GiB"


def _rows(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"**{title}**\n")
    print("| | |\n|---|---:|")
    for key, value in rows:
        print(f"| {key} | {value} |")


def _table_cnnlab(_: str, r: dict[str, Any]) -> None:
    shape = "x".join(str(v) for v in r["input_shape"] or [])
    resize = (r.get("input_recipe") or {}).get("resize", "?")
    _rows(
        f"cnnlab: `{r['command']}`",
        [
            ("test accuracy", f"{pct(r['test_accuracy'])} ({r['test_images']:,} images)"),
            ("training seconds (run.json)", _num(r["train_seconds"], ".0f", " s")),
            ("wall seconds (whole process)", _num(r["wall_seconds"], ".0f", " s")),
            ("chosen input", f"{shape} ({resize}), {r['precision']}"),
            ("epochs run (best)", f"{r['epochs_run']} ({r['best_epoch']})"),
            ("train / validation images", f"{r['train_images']:,} / {r['validation_images']:,}"),
            ("unreadable files", str(r["unreadable_images"])),
            ("peak RSS", _gib(r["peak_rss_bytes"])),
        ],
    )


def _table_keras(part: str, r: dict[str, Any]) -> None:
    what = (
        "augmentation, batch norm, global pooling, EarlyStopping on val_loss"
        if part == "keras-strong"
        else "the notes' CNN"
    )
    read, listed = r["files_read"], r["files_listed"]
    _rows(
        f"{part}: plain Keras, image_dataset_from_directory 64x64 RGB, {what}",
        [
            ("test accuracy (files it read)", f"{pct(r['test_accuracy'])} ({read['test']:,})"),
            ("fit seconds", _num(r["fit_seconds"], ".0f", " s")),
            ("wall seconds (whole process)", _num(r["wall_seconds"], ".0f", " s")),
            ("epochs run (best)", f"{r['epochs_run']} ({r.get('best_epoch') or '-'})"),
            *[
                (f"{split} files read / listed", f"{read[split]:,} / {listed[split]:,}")
                for split in ("train", "val", "test")
                if split in read
            ],
            ("peak RSS", _gib(r["peak_rss_bytes"])),
        ],
    )


def _table_pipeline(_: str, r: dict[str, Any]) -> None:
    ratio = r["pipeline_images_per_second"] / r["step_images_per_second"]
    rows = [
        ("input", f"{r['input']} ({r['recipe_from']}), batch {BATCH}"),
        (
            f"pipeline: FolderBatches, {r['threads']} threads, one epoch",
            f"{r['pipeline_images_per_second']:,.0f} images/s ({r['pipeline_images']:,} images)",
        ),
        (
            f"training step: photo_cnn, {r['precision']}, {r['step_images']:,} images in memory"
            " (best of 3 epochs)",
            f"{r['step_images_per_second']:,.0f} images/s",
        ),
        ("pipeline / step", f"{ratio:.2f}x"),
        ("decoding's share of a serial step (step / pipeline)", f"{100 / ratio:.0f}%"),
    ]
    if r.get("fit_images_per_second"):
        rows.append(
            (
                "cnnlab's fit, whole epochs (with validation)",
                f"{r['fit_images_per_second']:,.0f} images/s",
            )
        )
    _rows("pipeline: input images/s against the training step's", rows)


def _table_memory(_: str, r: dict[str, Any]) -> None:
    made = _num(r["generate_seconds"], ".0f", " s") if r["generate_seconds"] else "reused"
    _rows(
        f"memory: `{r['command']}`",
        [
            ("pictures (generated in)", f"{r['pictures']:,} ({made})"),
            (
                "as float32 (N x H x W x 3 x 4 bytes)",
                f"{r['float32_bytes'] / 1e9:.2f} GB ({_gib(r['float32_bytes'])})",
            ),
            ("seconds to the first training step", _num(r["seconds_to_first_step"], ".1f", " s")),
            (
                f"seconds to the end of the first call (up to {STEPS_PER_EXECUTION} steps)",
                _num(r["seconds_to_first_call_done"], ".1f", " s"),
            ),
            (
                f"seconds to the stop ({r['steps_trained']} steps)",
                _num(r["seconds_to_stop"], ".1f", " s"),
            ),
            (
                "wall seconds (whole process, validation and save included)",
                _num(r["wall_seconds"], ".0f", " s"),
            ),
            ("peak RSS at the stop", _gib(r["rss_at_stop_bytes"])),
            ("peak RSS, whole process", _gib(r["peak_rss_bytes"])),
        ],
    )


def _table_summary(results: dict[str, Any], parts: list[str]) -> None:
    print("**summary**\n")
    print("| what | test accuracy | wall time | note |\n|---|---:|---:|---|")
    for part in parts:
        r = results.get(part, {})
        if "error" in r:
            print(f"| {part} | failed | | {r['error'].splitlines()[0][:80]} |")
        elif part == "cnnlab":
            shape = "x".join(str(v) for v in r["input_shape"] or [])
            print(
                f"| cnnlab train --dataset DIR (defaults) | {pct(r['test_accuracy'])} | "
                f"{r['wall_seconds']:.0f} s | {shape}, {r['epochs_run']} epochs, training "
                f"{r['train_seconds']:.0f} s |"
            )
        elif part in ("keras", "keras-strong"):
            what = "Keras, stronger pipeline" if part == "keras-strong" else "Keras, the notes' CNN"
            read, listed = r["files_read"], r["files_listed"]
            print(
                f"| {what} | {pct(r['test_accuracy'])} | {r['wall_seconds']:.0f} s | 64x64x3, "
                f"{r['epochs_run']} epochs; read {read['train']:,} of {listed['train']:,} "
                f"training, {read['test']:,} of {listed['test']:,} test files |"
            )
        elif part == "pipeline":
            ratio = r["pipeline_images_per_second"] / r["step_images_per_second"]
            print(
                f"| input pipeline vs training step | | | {r['pipeline_images_per_second']:,.0f}"
                f" vs {r['step_images_per_second']:,.0f} images/s ({ratio:.2f}x) |"
            )
        elif part == "memory":
            print(
                f"| {r['pictures']:,} pictures at {results['settings']['large_size']} px "
                f"({r['float32_bytes'] / 1e9:.1f} GB as float32) | | "
                f"{_num(r['seconds_to_first_step'], '.0f', ' s')} to the first step | "
                f"peak RSS {_gib(r['peak_rss_bytes'])} |"
            )


# -- the workers: each runs in its own process ------------------------------------------------


def _worker(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "keras":
        _keras_worker(json.loads(Path(argv[1]).read_text()))
    elif kind == "pipeline":
        _pipeline_worker(json.loads(Path(argv[1]).read_text()))
    elif kind == "memory":
        _memory_worker(Path(argv[1]), int(argv[2]), argv[argv.index("--") + 1 :])
    else:
        raise SystemExit(f"unknown worker {kind!r}")


def _keras_worker(spec: dict[str, Any]) -> None:
    import keras

    keras.utils.set_random_seed(spec["seed"])
    links = Path(spec["links"])

    def load(split: str, shuffle: bool) -> Any:
        return keras.utils.image_dataset_from_directory(
            links / split, labels="inferred", label_mode="int", class_names=spec["class_names"],
            color_mode="rgb", batch_size=BATCH, image_size=KERAS_SIZE, shuffle=shuffle,
            seed=spec["seed"],
        )  # fmt: skip

    train, test = load("train", True), load("test", False)
    has_val = any(p.is_symlink() for p in (links / "val").rglob("*"))
    val = load("val", False) if spec["strong"] and has_val else None
    read = {"train": len(train.file_paths), "test": len(test.file_paths)}
    if val is not None:
        read["val"] = len(val.file_paths)
    n = len(spec["class_names"])
    model = _strong_model(keras, n) if spec["strong"] else _notes_model(keras, n)
    callbacks = []
    if val is not None:
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=spec["patience"], restore_best_weights=True, verbose=1
        )
        callbacks.append(stop)
    start = time.perf_counter()
    history = model.fit(
        train, validation_data=val, epochs=spec["epochs"], callbacks=callbacks, verbose=2
    )
    fit_seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(test, verbose=0)
    epochs_run = len(history.epoch)
    best = None
    if val is not None:
        losses = history.history["val_loss"]
        best = losses.index(min(losses)) + 1
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "test_accuracy": float(accuracy),
                "test_loss": float(loss),
                "fit_seconds": round(fit_seconds, 1),
                "epochs_run": epochs_run,
                "best_epoch": best,
                "files_read": read,
                "parameters": model.count_params(),
            }
        )
    )


def _notes_model(keras: Any, n: int) -> Any:
    """The notes' CNN, as they write it (inputs scaled to [0, 1] first, as they divide by 255)."""
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(*KERAS_SIZE, 3)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(64, (3, 3), activation="relu", padding="same"),
            layers.MaxPool2D(pool_size=(2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPool2D(2, 2),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPool2D(2, 2),
            layers.Flatten(),
            layers.Dense(units=128, activation="relu"),
            layers.Dense(n, activation="softmax"),
        ],
        name="notes_cnn",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _strong_model(keras: Any, n: int) -> Any:
    """What a careful Keras user writes for a few thousand photos: augmentation as layers
    (active only in training), batch-normalised convolutions, global average pooling."""
    layers = keras.layers

    def block(filters: int, pool: bool = True) -> list[Any]:
        made = [
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
        ]
        return [*made, layers.MaxPool2D()] if pool else made

    model = keras.Sequential(
        [
            keras.Input(shape=(*KERAS_SIZE, 3)),
            layers.RandomFlip("horizontal"),
            layers.RandomZoom(0.15, fill_mode="reflect"),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect"),
            layers.RandomBrightness(0.15),  # value range 0..255, as the loader gives
            layers.RandomContrast(0.2),
            layers.Rescaling(1 / 255),
            *block(32),
            *block(64),
            *block(128),
            *block(256, pool=False),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.3),
            layers.Dense(n, activation="softmax"),
        ],
        name="keras_strong",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _pipeline_worker(spec: dict[str, Any]) -> None:
    import numpy as np

    from cnnlab.data.folders import (
        FolderBatches,
        Recipe,
        choose_color,
        choose_image_size,
        inspect,
        scan,
    )

    data = scan(spec["dataset"], seed=spec["seed"], validation_fraction=spec["validation"])
    if spec["recipe"]:
        recipe, recipe_from = Recipe.from_dict(spec["recipe"]), "the cnnlab run's"
    else:
        inspection = inspect(data, warn=False)
        recipe = Recipe(choose_image_size(inspection), choose_color(inspection))
        recipe_from = "chosen from the data"
    batches = FolderBatches(data.train, recipe, BATCH, shuffle=True, seed=spec["seed"])
    start = time.perf_counter()
    kept_x, kept_y, images = [], [], 0
    for index in range(len(batches)):
        x, y = batches[index]
        images += len(y)
        if sum(len(k) for k in kept_y) < spec["steps"] * BATCH:
            kept_x.append(x)
            kept_y.append(y)
    pipeline_seconds = time.perf_counter() - start
    threads = batches._threads  # its default, for the table
    batches.close()

    from cnnlab._backend import dtype_policy, keras, precision_choice
    from cnnlab.model.builder import build_model

    keras_ = keras()
    policy = spec["precision"] or precision_choice()[0]
    keras_.utils.set_random_seed(spec["seed"])
    with dtype_policy(policy):
        model = build_model("photo_cnn", recipe.input_shape, len(data.class_names))
    model.compile(
        optimizer=keras_.optimizers.Adam(0.002),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    x = np.concatenate(kept_x)[: spec["steps"] * BATCH]
    y = np.concatenate(kept_y)[: spec["steps"] * BATCH]

    class EpochTimes(keras_.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    timer = EpochTimes()
    model.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0, callbacks=[timer])
    step_seconds = min(timer.seconds[1:])  # the first compiles; the best: the CPU is shared
    height, width, channels = recipe.input_shape
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "input": f"{height}x{width}x{channels} {recipe.resize}",
                "recipe_from": recipe_from,
                "threads": threads,
                "pipeline_images": images,
                "pipeline_seconds": round(pipeline_seconds, 2),
                "pipeline_images_per_second": images / pipeline_seconds,
                "precision": policy,
                "step_images": len(y),
                "step_epoch_seconds": [round(s, 3) for s in timer.seconds],
                "step_images_per_second": len(y) / step_seconds,
            }
        )
    )


def _memory_worker(out: Path, steps: int, cnnlab_argv: list[str]) -> None:
    """`cnnlab train` with a callback that notes the time of the first step, of the end of the
    first compiled call, and stops training after `steps` steps (noting the peak RSS then)."""
    import resource

    import cnnlab.training.trainer as trainer

    found: dict[str, Any] = {}

    def note(**values: Any) -> None:
        found.update(values)
        out.write_text(json.dumps(found))

    fit = trainer._fit  # a hook: the CLI has no `callbacks`

    def hooked(model: Any, plan: Any, feed: Any, callbacks: list[Any], *rest: Any) -> Any:
        from cnnlab._backend import keras

        class Stopwatch(keras().callbacks.Callback):
            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                if "first_step_at" not in found:
                    note(first_step_at=time.time())

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if "first_call_done_at" not in found:
                    note(first_call_done_at=time.time())
                # `batch` is the last step of the compiled call, counted past a short epoch's end
                done = min(batch + 1, self.params.get("steps") or batch + 1)
                last = done == self.params.get("steps")
                if (done >= steps or last) and "stopped_at" not in found:
                    self.model.stop_training = True
                    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                    note(stopped_at=time.time(), steps=done, rss_at_stop_bytes=rss)

        return fit(model, plan, feed, [Stopwatch(), *callbacks], *rest)

    trainer._fit = hooked
    from cnnlab.cli import main as cli

    sys.exit(cli(cnnlab_argv))


if __name__ == "__main__":
    main()
