"""TensorBoard event files in a run's `logs/` folder.

Keras' `TensorBoard` callback writes `logs/train/` and `logs/validation/` as a run trains (one
point per epoch, the step being the 0-based epoch, as in history.csv); evaluation writes
`logs/test/`: the test loss and accuracy at the kept model's epoch, the per-class report, and
two images, the confusion matrix and the test images with the highest loss. TensorBoard shows
the three folders as three runs, so the test point sits on the same charts as the curves.

A killed run's last epoch may be in the event files but not in its backup; `keep_epochs_before`
drops it before the resumed run writes that epoch again, as `Run.history` drops a repeated row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRAINING_RUNS = ("train", "validation")  # the folders Keras' TensorBoard callback writes
TEST_RUN = "test"
_PARTIAL = ".pruning-"  # a rewritten event file before it is renamed into place


def missing() -> str:
    """What writing event files lacks ("" when nothing): Keras' callback and `write_test`
    write through TensorFlow's `tf.summary`, which needs the `tensorboard` package."""
    import importlib.util

    absent = [name for name in ("tensorflow", "tensorboard") if not importlib.util.find_spec(name)]
    return f"{' and '.join(absent)} not installed (pip install 'cnnlab[train]')" if absent else ""


def keep_epochs_before(logs_dir: str | Path, first_epoch: int) -> None:
    """Make the training event files hold only the epochs before `first_epoch`: all of them
    go when a run starts from scratch, a killed run's unfinished epochs when it resumes."""
    for name in TRAINING_RUNS:
        folder = Path(logs_dir) / name
        if not folder.is_dir():
            continue
        if first_epoch == 0:
            shutil.rmtree(folder)
            continue
        for leftover in folder.glob(_PARTIAL + "*"):
            leftover.unlink(missing_ok=True)
        for path in sorted(folder.glob("*tfevents*")):
            _keep_steps_before(path, first_epoch)


def _keep_steps_before(path: Path, step: int) -> None:
    """Rewrite one event file without the summaries at `step` or later, atomically."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    records = list(RawEventFileLoader(str(path)).Load())
    kept = [r for r in records if _before(Event.FromString(r), step)]
    if len(kept) == len(records):
        return
    # The temporary name holds no "tfevents", so TensorBoard never reads it as a log.
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=_PARTIAL)
    try:
        with os.fdopen(handle, "wb") as out:
            writer = RecordWriter(out)
            for record in kept:
                writer.write(record)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    log.info("%s: dropped %d records of epochs from %d on", path, len(records) - len(kept), step)


def _before(event: Any, step: int) -> bool:
    """Whether an event stays: anything but a summary (the file's version), or one before
    `step`."""
    return not event.HasField("summary") or event.step < step


def write_test(
    logs_dir: str | Path,
    step: int,
    scalars: Mapping[str, float],
    images: Mapping[str, Any],
    text: Mapping[str, str],
) -> Path | None:
    """Replace `logs/test/` with one evaluation: `scalars` (named as Keras names the
    training curves, e.g. `epoch_accuracy`), `images` (uint8 arrays, height x width x
    channels) and `text` (Markdown), all at `step`. Returns the folder, or None when
    TensorFlow or TensorBoard is not installed (`missing`: one warning then)."""
    problem = missing()
    if problem:
        log.warning("no TensorBoard files for this evaluation: %s", problem)
        return None
    import tensorflow as tf

    folder = Path(logs_dir) / TEST_RUN
    shutil.rmtree(folder, ignore_errors=True)
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for name, value in scalars.items():
            tf.summary.scalar(name, value, step=step)
        for name, picture in images.items():
            tf.summary.image(name, picture[None], step=step)
        for name, words in text.items():
            tf.summary.text(name, words, step=step)
    writer.close()
    return folder
