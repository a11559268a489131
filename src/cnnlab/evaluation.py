"""Test-set metrics of a run: loss, accuracy, per-class precision/recall/F1, confusion matrix.

Only this stage touches the test set; training tunes on the validation split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import DataError
from cnnlab.runs import Run

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
    feed = run.data(data_dir)
    model = run.load_model(unsafe=unsafe)
    labels, probabilities, flipped = _predict_test_set(model, feed, batch_size, tta=tta)
    metrics = classification_metrics(labels, probabilities, feed.class_names)
    if tta:
        averaged = (probabilities + flipped) / 2
        both = classification_metrics(labels, averaged, feed.class_names)
        metrics["tta"] = {
            "method": "mean of the image's and its horizontal flip's probabilities",
            **{k: both[k] for k in ("test_loss", "test_accuracy", "macro_f1")},
        }
    metrics["run"] = str(run.dir)
    run.write_metrics(metrics)
    return metrics


def _predict_test_set(
    model: Any, feed: Feed, batch_size: int, *, tta: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test labels and the model's probabilities, batch by batch (a folder's test set is
    streamed: the labels are those of the pictures that could be read), and with `tta` the
    probabilities of each picture flipped left-right."""
    labels, plain, flipped = [], [], []
    for x, y in feed.numpy_batches("test", batch_size):
        labels.append(y)
        plain.append(np.asarray(model.predict_on_batch(x), dtype=np.float64))
        if tta:
            flipped.append(np.asarray(model.predict_on_batch(x[:, :, ::-1]), dtype=np.float64))
    if not labels:
        raise DataError("the test split holds no readable image; nothing to evaluate")
    joined = np.concatenate(plain)
    return np.concatenate(labels), joined, np.concatenate(flipped) if tta else joined


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
    picked = probabilities[np.arange(len(y_true)), y_true]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
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
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    confusion = metrics["confusion_matrix"]
    cell = max(5, len(str(max(max(r) for r in confusion))) + 1)
    short = [name[: cell - 1] for name in metrics["class_names"]]
    lines.append(" " * width + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(metrics["class_names"], confusion, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)
