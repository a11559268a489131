"""Test-set metrics of a run: loss, accuracy, per-class precision/recall/F1, confusion matrix,
and calibration (`cnnlab.calibration`: the ECE before and after a temperature); and each test
image's outcome (`test_predictions`), so its mistakes can be opened without the model.

Only this stage touches the test set; training tunes on the validation split, and so does the
temperature fitted here.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cnnlab import calibration
from cnnlab.errors import DataError
from cnnlab.model.heads import with_logits
from cnnlab.runs import Run
from cnnlab.tracking import events, mlflow_runs

if TYPE_CHECKING:
    from cnnlab.data.feed import Feed

log = logging.getLogger(__name__)


def evaluate(
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    batch_size: int = 256,
    tta: bool = False,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Evaluate a finished run on its dataset's test set and write `metrics.json`.

    `unsafe` loads a model file that holds Python code (see `cnnlab.runs.Run.load_model`).

    With `tta`, also test-time augmentation: the prediction averaged with that of the
    horizontally flipped image, reported apart (`metrics["tta"]`) from the plain figures.
    """
    run = Run(run_dir)
    feed = run.data(data_dir, validation=True)
    model = run.load_model(unsafe=unsafe)
    model_and_logits = with_logits(model) or model
    worst = WorstImages(BOARD_IMAGES)
    labels, probabilities, flipped, logits = _predict_split(
        model_and_logits, feed, "test", batch_size, tta=tta, worst=worst
    )
    if not len(labels):
        raise DataError("the test split holds no readable image; nothing to evaluate")
    metrics = classification_metrics(labels, probabilities, feed.class_names)
    val_labels, val_probabilities, _, val_logits = _predict_split(
        model_and_logits, feed, "val", batch_size
    )
    metrics.update(
        calibration_metrics(
            labels, probabilities, val_labels, val_probabilities, logits, val_logits
        )
    )
    if tta:
        averaged = (probabilities + flipped) / 2
        both = classification_metrics(labels, averaged, feed.class_names)
        metrics["tta"] = {
            "method": "mean of the image's and its horizontal flip's probabilities",
            **{k: both[k] for k in ("test_loss", "test_accuracy", "macro_f1")},
        }
    metrics["run"] = str(run.dir)
    outcomes = test_predictions(feed, labels, probabilities)
    if outcomes is not None:
        run.write_test_predictions(outcomes)
    run.write_metrics(metrics)
    step = max((run.state().best_epoch or 1) - 1, 0)  # the kept model's epoch, 0-based
    write_board(run, model, metrics, worst, step)
    mlflow_runs.log_evaluation(run, metrics, step)
    return metrics


def test_predictions(
    feed: Feed, labels: np.ndarray, probabilities: np.ndarray
) -> dict[str, np.ndarray] | None:
    """Each test image's outcome, as arrays for `Run.write_test_predictions`: `index` (its row
    in the test split), `label`, `predicted`, `probabilities` (float16: enough to show, a
    quarter of float64's size) and `loss` (-log p of the true class, as `test_loss` averages
    it), with `class_names`; for a folder also each picture's `path` under the folder `root`,
    so a picture is decoded alone, without scanning the folder.

    None (and a warning) where the streamed pictures cannot be matched to their files: a
    picture that failed to decode mid-stream was skipped, and its batch refilled."""
    from cnnlab.data.feed import FolderFeed

    labels = np.asarray(labels).astype(np.int64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    extra: dict[str, np.ndarray] = {}
    if isinstance(feed, FolderFeed):
        split = feed.split("test")
        skipped = set(feed.unreadable)
        rows = np.array(
            [i for i, path in enumerate(split.paths) if str(path) not in skipped], np.int64
        )
        if len(rows) != len(labels) or not np.array_equal(split.labels[rows], labels):
            log.warning("the test pictures could not be matched to their files; mistakes not kept")
            return None
        root = feed.dataset.root.absolute()
        paths = [Path(os.path.relpath(split.paths[i].absolute(), root)).as_posix() for i in rows]
        extra = {"root": np.array(str(root)), "path": np.array(paths, dtype=str)}
    else:
        rows = np.arange(len(labels))
    return {
        "index": rows.astype(np.int32),
        "label": labels.astype(np.int16),
        "predicted": probabilities.argmax(axis=1).astype(np.int16),
        "probabilities": probabilities.astype(np.float16),
        "loss": per_image_loss(labels, probabilities).astype(np.float32),
        "class_names": np.array(feed.class_names, dtype=str),
        **extra,
    }


def per_image_loss(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """-log p(true class) per image, the probability clipped at 1e-7 as Keras does."""
    picked = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(picked, 1e-7, 1.0))


BOARD_IMAGES = 12
"""How many of the highest-loss test images TensorBoard shows."""


class WorstImages:
    """The `count` test images with the highest loss seen so far, kept batch by batch (a folder's
    test set is streamed, never held whole)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.images: np.ndarray | None = None
        self.labels = np.zeros(0, dtype=np.int64)
        self.losses = np.zeros(0)

    def add(self, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> None:
        labels = np.asarray(labels).astype(np.int64).ravel()
        losses = per_image_loss(labels, probabilities)
        mine = np.argsort(-losses, kind="stable")[: self.count]  # copy at most `count` images
        batch = np.asarray(images)[mine]
        pool = batch if self.images is None else np.concatenate([self.images, batch])
        pool_losses = np.concatenate([self.losses, losses[mine]])
        keep = np.argsort(-pool_losses, kind="stable")[: self.count]
        self.images = pool[keep]
        self.labels = np.concatenate([self.labels, labels[mine]])[keep]
        self.losses = pool_losses[keep]


def write_board(
    run: Run, model: Any, metrics: dict[str, Any], worst: WorstImages, step: int
) -> None:
    """TensorBoard's view of the evaluation (`cnnlab.tracking.events.write_test`): the test
    loss and accuracy beside the training curves, the report as text, the confusion matrix
    and the highest-loss test images as pictures; nothing is drawn where they cannot be
    written (`events.missing`)."""
    problem = events.missing()
    if problem:
        log.warning("no TensorBoard files for this evaluation: %s", problem)
        return
    from PIL import Image

    from cnnlab.visualize._common import to_png
    from cnnlab.visualize.confusion import plot_confusion
    from cnnlab.visualize.errors import plot_errors

    names = metrics["class_names"]
    figures = {"confusion_matrix": plot_confusion(metrics["confusion_matrix"], names)}
    if worst.images is not None and len(worst.labels):
        figures["highest_loss"] = plot_errors(
            model, worst.images, worst.labels, names, n=len(worst.labels)
        )
    images = {
        name: np.asarray(Image.open(io.BytesIO(to_png(figure))).convert("RGB"))
        for name, figure in figures.items()
    }
    events.write_test(
        run.logs_dir,
        step,
        {"epoch_loss": metrics["test_loss"], "epoch_accuracy": metrics["test_accuracy"]},
        images,
        {"report": "```\n" + format_report(metrics) + "\n```"},
    )


def calibration_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    val_labels: np.ndarray,
    val_probabilities: np.ndarray,
    logits: np.ndarray | None = None,
    val_logits: np.ndarray | None = None,
    *,
    bins: int = calibration.BINS,
) -> dict[str, Any]:
    """The test set's ECE, a temperature fitted on the validation split (None without one),
    the test ECE after it, the validation NLL before and after, the "unsure" thresholds
    (`cnnlab.calibration.UnsureRule`: at most `UNSURE_SHARE` of the validation images beyond
    each; the energy's only with the logits) with the share of validation and test images the
    rule flags (`unsure_score`: which score decided), and the reliability tables `cnnlab
    visualize calibration` draws."""
    before = calibration.reliability(probabilities, labels, bins)
    result: dict[str, Any] = {
        "ece": before.ece,
        "temperature": None,
        "ece_calibrated": None,
        "val_nll": None,
        "val_nll_calibrated": None,
        "unsure_score": None,
        "unsure_threshold": None,
        "unsure_energy_threshold": None,
        "val_unsure_share": None,
        "test_unsure_share": None,
    }
    tables: dict[str, Any] = {"bins": bins, "validation_images": len(val_labels)}
    tables["before"] = before.to_dict()
    if len(val_labels):
        temperature = calibration.fit_temperature(val_probabilities, val_labels)
        val_calibrated = calibration.with_temperature(val_probabilities, temperature)
        after = calibration.reliability(
            calibration.with_temperature(probabilities, temperature), labels, bins
        )
        rule = calibration.UnsureRule(
            temperature,
            calibration.unsure_threshold(val_calibrated),
            None if val_logits is None else calibration.energy_threshold(val_logits, temperature),
        )
        result.update(
            temperature=temperature,
            ece_calibrated=after.ece,
            val_nll=calibration.negative_log_likelihood(val_probabilities, val_labels),
            val_nll_calibrated=calibration.negative_log_likelihood(val_calibrated, val_labels),
            unsure_score="probability" if rule.energy_threshold is None else "energy",
            unsure_threshold=rule.threshold,
            unsure_energy_threshold=rule.energy_threshold,
            val_unsure_share=_unsure_share(rule, val_probabilities, val_logits),
            test_unsure_share=_unsure_share(rule, probabilities, logits),
        )
        tables["after"] = after.to_dict()
    result["calibration"] = tables
    return result


def _unsure_share(
    rule: calibration.UnsureRule, probabilities: np.ndarray, logits: np.ndarray | None
) -> float:
    """The share of these images the rule flags."""
    return float(rule.flags(probabilities, logits).mean()) if len(probabilities) else 0.0


def _outputs(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The probabilities of a batch, and its logits where `model` gives them as well
    (`cnnlab.model.heads.with_logits`)."""
    output = model.predict_on_batch(x)
    if isinstance(output, (list, tuple)):
        return np.asarray(output[0], np.float64), np.asarray(output[1], np.float64)
    return np.asarray(output, dtype=np.float64), None


def _joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
    """The parts joined, or None if any is None (a model without logits)."""
    known = [part for part in parts if part is not None]
    return np.concatenate(known) if known and len(known) == len(parts) else None


def _predict_split(
    model: Any,
    feed: Feed,
    split: Literal["val", "test"],
    batch_size: int,
    *,
    tta: bool = False,
    worst: WorstImages | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """A split's labels and the model's probabilities, batch by batch (a folder's split is
    streamed: the labels are those of the pictures that could be read); with `tta` the
    probabilities of each picture flipped left-right (else the plain ones again); the logits
    where the model gives them; `worst` keeps the highest-loss images. Empty for an empty
    split."""
    labels, plain, flipped, logits = [], [], [], []
    if feed.count(split):
        for x, y in feed.numpy_batches(split, batch_size):
            labels.append(np.asarray(y).astype(np.int64).ravel())
            probabilities, batch_logits = _outputs(model, x)
            plain.append(probabilities)
            logits.append(batch_logits)
            if worst is not None:
                worst.add(x, y, probabilities)
            if tta:
                flipped.append(_outputs(model, x[:, :, ::-1])[0])
    if not labels:
        empty = np.zeros((0, len(feed.class_names)))
        return np.zeros(0, dtype=np.int64), empty, empty, None
    joined = np.concatenate(plain)
    return (
        np.concatenate(labels),
        joined,
        np.concatenate(flipped) if tta else joined,
        _joined(logits),
    )


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Loss, accuracy, per-class precision/recall/F1 and the confusion matrix of predictions."""
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = len(class_names)
    y_pred = probabilities.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros(n_classes), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(n_classes), where=denominator > 0
    )
    loss = float(np.mean(per_image_loss(y_true, probabilities)))
    return {
        "test_loss": loss,
        "test_accuracy": float(true_positive.sum() / max(len(y_true), 1)),
        "test_images": len(y_true),
        "per_class": [
            {
                "class": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(class_names)
        ],
        "macro_f1": float(f1.mean()),
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
    }


def format_report(metrics: dict[str, Any]) -> str:
    """The metrics as a plain-text table: summary line, per-class rows, confusion matrix."""
    width = max(len(row["class"]) for row in metrics["per_class"])
    lines = [
        f"test loss {metrics['test_loss']:.4f}   test accuracy {metrics['test_accuracy']:.4f}"
        f"   ({metrics['test_images']:,} images)",
        "",
        f"{'class':<{width}}  precision  recall     f1  support",
    ]
    for row in metrics["per_class"]:
        lines.append(
            f"{row['class']:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}"
            f"  {row['f1']:6.4f}  {row['support']:7d}"
        )
    lines.append(f"{'macro F1':<{width}}  {'':9}  {'':6}  {metrics['macro_f1']:6.4f}")
    if "tta" in metrics:
        tta = metrics["tta"]
        lines += [
            "",
            f"with test-time augmentation (+ horizontal flip): test loss {tta['test_loss']:.4f}"
            f"   test accuracy {tta['test_accuracy']:.4f}",
        ]
    if "ece" in metrics:
        lines += ["", format_calibration(metrics)]
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    confusion = metrics["confusion_matrix"]
    cell = max(5, len(str(max(max(r) for r in confusion))) + 1)
    short = [name[: cell - 1] for name in metrics["class_names"]]
    lines.append(" " * width + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(metrics["class_names"], confusion, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)


def format_calibration(metrics: dict[str, Any]) -> str:
    """The test ECE, and the temperature with the ECE and validation NLL after it; then the
    "unsure" threshold and the shares it flags."""
    bins = metrics.get("calibration", {}).get("bins", calibration.BINS)
    line = f"calibration: ECE {metrics['ece']:.4f} ({bins} bins)"
    if metrics.get("temperature") is None:
        return line + "; no validation split, so no temperature fitted"
    images = metrics.get("calibration", {}).get("validation_images", 0)
    line = (
        f"{line}; temperature {metrics['temperature']:.3f} (fitted on {images:,} validation"
        f" images): ECE {metrics['ece_calibrated']:.4f}, validation NLL"
        f" {metrics['val_nll']:.4f} -> {metrics['val_nll_calibrated']:.4f}"
    )
    if metrics.get("unsure_threshold") is None:
        return line
    if metrics.get("unsure_energy_threshold") is not None:
        rule = f"unsure above energy {metrics['unsure_energy_threshold']:.3f}"
    else:
        rule = f"unsure below confidence {metrics['unsure_threshold']:.4f} after the temperature"
    return (
        f"{line}\n{rule}: {metrics['val_unsure_share']:.1%} of validation,"
        f" {metrics['test_unsure_share']:.1%} of test images flagged"
    )
