"""The run folder, the unit of work: one class owns its files.

    runs/<name>/
      config.toml   exactly what ran (all defaults resolved, the seed drawn), enough to re-run it
      run.json      `RunState`: status, class names, input shape, best epoch, timings
      summary.txt   model.summary()
      model.keras   the best model, written atomically
      history.csv   one row per epoch
      metrics.json  test metrics, once evaluated
      test_predictions.npz  each test image's label, prediction, probabilities and loss, once
                    evaluated (`Run.test_predictions`), so mistakes open without the model
      backup/       cnnlab's `TrainingState` (every variable and counter after the last finished
                    epoch) while training runs; removed at the end
      model.onnx    (and other exports) with a sidecar `<file>.json`, once exported
      .lock         held by the process that trains the run, removed when it finishes: a run
                    whose run.json says "running" but whose lock no live process holds was
                    interrupted (`Run.training`, `Run.is_training`)
      logs/         TensorBoard event files: train/ and validation/ as it trains, test/ once
                    evaluated
      mlflow.json   where the run is tracked in MLflow (tracking URI, experiment and run ids),
                    when it trained with `--log mlflow`

Training creates the folder and writes it through a `Run`; later stages add to it: `evaluate`
writes metrics.json (through `Run`), `export` its model files and sidecars, and `visualize` saves
its pictures there unless told otherwise; predict, serve and bench only read. `Run(path,
read_only=True)` is a run folder this process must not change (a data-parallel process other
than 0): it reads as any other, and its writes do nothing. `Run.open` takes what a user points
at: a run folder, a `.keras` file or an exported `.onnx` file (the folder is then the file's
parent).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from cnnlab._io import atomic_path, atomic_write_text
from cnnlab.errors import ConfigError, RunError, UnsafeModelError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; a run's status is run.json's
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import keras
    import numpy as np

    from cnnlab.config import Config
    from cnnlab.data.feed import Feed
    from cnnlab.data.folders import Recipe

logger = logging.getLogger(__name__)

__all__ = [
    "BACKUP_DIR",
    "CONFIG_FILE",
    "HISTORY_FILE",
    "LOCK_FILE",
    "LOGS_DIR",
    "METRICS_FILE",
    "MLFLOW_FILE",
    "MODEL_FILE",
    "ONNX_FILE",
    "STATE_FILE",
    "SUMMARY_FILE",
    "TEST_PREDICTIONS_FILE",
    "History",
    "Run",
    "RunState",
    "load_model",
    "model_or_architecture",
    "read_sidecar",
    "sidecar_class_names",
    "sidecar_path",
]

CONFIG_FILE = "config.toml"
STATE_FILE = "run.json"
MODEL_FILE = "model.keras"
SUMMARY_FILE = "summary.txt"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
BACKUP_DIR = "backup"
ONNX_FILE = "model.onnx"
TEST_PREDICTIONS_FILE = "test_predictions.npz"
LOCK_FILE = ".lock"  # one dot: `Run.make_dir` removes `.name.tmp` leftovers, not this
LOGS_DIR = "logs"
MLFLOW_FILE = "mlflow.json"

_MISSING = (None, "", "NA")

History = list[dict[str, float]]
"""history.csv as rows of floats, one per epoch, `epoch` 0-based as Keras counts."""


@dataclass
class RunState:
    """run.json: what a run is (status, data, classes) and how training went.

    `status` is "new" before training starts, then "running" until the final save, then
    "finished". Keys this version does not know are kept in `extra` and written back.
    """

    status: str = "new"
    cnnlab_version: str = ""
    keras_version: str = ""
    backend: str | None = None  # the Keras backend it trained on
    cpu: dict[str, Any] | None = None  # model and instruction sets (cnnlab._cpu.CpuInfo)
    precision: dict[str, str] | None = None  # policy, and why it was chosen
    dataset: str = ""
    class_names: list[str] = field(default_factory=list)
    input_shape: list[int | None] = field(default_factory=list)
    train_images: int = 0
    validation_images: int = 0
    train_seconds: float = 0.0
    epochs_run: int | None = None
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    input_recipe: dict[str, Any] = field(default_factory=dict)
    """How a picture becomes this model's input (`cnnlab.data.folders.Recipe.to_dict`: size,
    colour, resize) for a model trained on a folder of images; empty for the garment recipe of
    Fashion-MNIST-like data (and for runs older than the field)."""
    unreadable_images: dict[str, str] = field(default_factory=dict)
    """Files of the dataset that could not be read and were skipped: path -> reason."""
    class_weights: list[float] = field(default_factory=list)
    """The loss weight of each class (`train.class_weight = "auto"`); empty: all 1."""
    started_from: dict[str, Any] = field(default_factory=dict)
    """A fine-tuned run's start: the run it took its weights from, with that run's classes
    and what was frozen (`model.init`); empty for new weights."""
    started_at: str | None = None
    """When training first started, ISO 8601 in UTC (None: a run older than the field)."""
    finished_at: str | None = None
    """When training finished (the final save), ISO 8601 in UTC; None before."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object run.json holds; fields not known yet (None, {}) are left out."""
        data: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "extra" or value is None:
                continue
            if spec.name == "best_metrics" and self.epochs_run is None:
                continue
            data[spec.name] = value
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        known = {spec.name for spec in dataclasses.fields(cls)} - {"extra"}
        state = cls(**{key: value for key, value in data.items() if key in known})
        state.extra = {key: value for key, value in data.items() if key not in known}
        return state


_P = ParamSpec("_P")


def _writes(method: Callable[Concatenate[Run, _P], None]) -> Callable[Concatenate[Run, _P], None]:
    """Mark a method that changes the run folder: on a read-only `Run` it does nothing."""

    @functools.wraps(method)
    def write(run: Run, *args: _P.args, **kwargs: _P.kwargs) -> None:
        if not run.read_only:
            method(run, *args, **kwargs)

    return write


class Run:
    """A run folder: where each file lives, and how each is read and written.

    `Run(path)` is a folder that may not exist yet (training creates it); `Run.open(path)` is
    what a reader points at, a folder or a model file inside one. With `read_only=True` every
    method that would change the folder does nothing (the reads are unchanged).
    """

    def __init__(
        self,
        directory: str | Path,
        model_file: str | Path | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self.dir = Path(directory)
        self.model_file = Path(model_file) if model_file is not None else self.dir / MODEL_FILE
        self.read_only = read_only

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """The run meant by `path`: a run folder, or a `.keras` / `.onnx` file (its folder is
        the run; class names come from the run.json or the export's sidecar beside it)."""
        path = Path(path)
        if path.is_dir():
            return cls(path)
        return cls(path.parent, path)

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}{', read_only=True' if self.read_only else ''})"

    # --- Where each file lives ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config_file(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def summary_file(self) -> Path:
        return self.dir / SUMMARY_FILE

    @property
    def history_file(self) -> Path:
        return self.dir / HISTORY_FILE

    @property
    def metrics_file(self) -> Path:
        return self.dir / METRICS_FILE

    @property
    def test_predictions_file(self) -> Path:
        return self.dir / TEST_PREDICTIONS_FILE

    @property
    def backup_dir(self) -> Path:
        return self.dir / BACKUP_DIR

    @property
    def state_backup(self) -> Path:
        """The complete training state after the last finished epoch (`TrainingState`)."""
        return self.backup_dir / "state.npz"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the process training the run; see `training`."""
        return self.dir / LOCK_FILE

    @property
    def logs_dir(self) -> Path:
        """TensorBoard's event files (`tensorboard --logdir RUN/logs`, or a runs folder)."""
        return self.dir / LOGS_DIR

    @property
    def mlflow_file(self) -> Path:
        return self.dir / MLFLOW_FILE

    @property
    def onnx_file(self) -> Path:
        """The exported ONNX model: the file opened, if it is one, else `model.onnx`."""
        return self.model_file if self.is_onnx else self.dir / ONNX_FILE

    @property
    def is_onnx(self) -> bool:
        return self.model_file.suffix.lower() == ".onnx"

    # --- config.toml ------------------------------------------------------------------------

    def config(self) -> Config:
        """The configuration the run was trained with."""
        from cnnlab.config import load_config

        if not self.config_file.is_file():
            raise RunError(
                f"{self.dir}: not a run folder (no {CONFIG_FILE}); train one with `cnnlab train`"
            )
        return load_config(self.config_file)

    @_writes
    def write_config(self, config: Config) -> None:
        atomic_write_text(self.config_file, config.to_toml())

    def monitor(self, default: str = "val_accuracy") -> str:
        """The metric that chose the best epoch, as config.toml says (`default` without one)."""
        from cnnlab.errors import CnnlabError

        try:
            return self.config().train.monitor
        except CnnlabError:
            return default

    @_writes
    def write_summary(self, text: str) -> None:
        atomic_write_text(self.summary_file, text)

    # --- run.json ---------------------------------------------------------------------------

    def state(self) -> RunState:
        """The run's state; a fresh `RunState` (status "new") where there is no run.json yet."""
        path = self.state_file
        if not path.is_file():
            return RunState()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(
                f"{path}: unreadable run state ({exc}); add --overwrite to start over"
            ) from None
        if not isinstance(data, dict):
            raise RunError(f"{path}: unreadable run state; add --overwrite to start over")
        try:
            return RunState.from_dict(data)
        except TypeError:
            raise RunError(f"{path}: unreadable run state; add --overwrite to start over") from None

    @_writes
    def write_state(self, state: RunState) -> None:
        atomic_write_text(self.state_file, json.dumps(state.to_dict(), indent=2) + "\n")

    def input_recipe(self) -> Recipe | None:
        """How new pictures must be prepared for this run's model, as its training images were:
        the folder recipe run.json (or an export's sidecar) records, or None for the garment
        recipe (Fashion-MNIST-like models, and runs that record none)."""
        from cnnlab.data.folders import Recipe

        recorded: Any = {}
        with contextlib.suppress(RunError):
            recorded = self.state().input_recipe
        if not recorded and self.is_onnx:
            recorded = read_sidecar(self.model_file).get("input_recipe") or {}
        if not recorded:
            return None
        try:
            return Recipe.from_dict(recorded)
        except ConfigError as exc:
            raise RunError(f"{self.state_file}: {exc}; train the run again") from None

    def class_names(self) -> list[str] | None:
        """The class names recorded beside the model: run.json, else an export's sidecar."""
        names: Any = None
        with contextlib.suppress(RunError):
            names = self.state().class_names or None
        if names is None and self.is_onnx:
            return sidecar_class_names(read_sidecar(self.model_file))
        if not isinstance(names, list):
            return None
        return [str(name) for name in names]

    # --- history.csv ------------------------------------------------------------------------

    def history(self) -> History:
        """history.csv as rows of floats, one per epoch (a repeated epoch keeps its last row:
        a kill between the CSV row and the backup repeats a row rather than losing one)."""
        path = self.history_file
        if not path.is_file():
            return []
        rows: dict[int, dict[str, float]] = {}
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if None in row.values():
                    continue  # fewer fields than the header: a line cut short by a kill
                try:
                    # Keras' CSVLogger writes "NA" in val_ columns when there is no validation.
                    values = {k: float(v) for k, v in row.items() if k and v not in _MISSING}
                except ValueError:
                    continue  # a line cut short by a kill mid-write
                if "epoch" in values:
                    rows[int(values["epoch"])] = values
        return [rows[e] for e in sorted(rows)]

    @_writes
    def write_history(self, history: History) -> None:
        """Rewrite history.csv from `history` (one clean row per epoch), atomically."""
        if not history:
            return
        fields = list(history[0])
        lines = [",".join(fields)]
        for row in history:
            lines.append(",".join(_format_number(row.get(f, float("nan")), f) for f in fields))
        atomic_write_text(self.history_file, "\n".join(lines) + "\n")

    # --- metrics.json -----------------------------------------------------------------------

    def metrics(self) -> dict[str, Any] | None:
        """The test metrics `cnnlab evaluate` wrote, or None before (or if unreadable)."""
        try:
            metrics = json.loads(self.metrics_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("%s: ignoring unreadable test metrics (%s)", self.metrics_file, exc)
            return None
        return metrics if isinstance(metrics, dict) else None

    @_writes
    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.metrics_file, json.dumps(metrics, indent=2) + "\n")

    # --- test_predictions.npz ---------------------------------------------------------------

    def test_predictions(self) -> dict[str, np.ndarray] | None:
        """Each test image's outcome as `cnnlab evaluate` recorded it (arrays by name, see
        `cnnlab.evaluation.test_predictions`), or None before (or if unreadable)."""
        import numpy as np

        try:
            with np.load(self.test_predictions_file, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            logger.warning("%s: ignoring unreadable test predictions (%s)", self.dir, exc)
            return None

    @_writes
    def write_test_predictions(self, arrays: Mapping[str, Any]) -> None:
        """Write the test images' outcomes as one compressed .npz, atomically."""
        import numpy as np

        with atomic_path(self.test_predictions_file) as tmp, tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)

    # --- mlflow.json -----------------------------------------------------------------------

    def mlflow_run(self) -> dict[str, str] | None:
        """Where the run is tracked in MLflow (`tracking_uri`, `experiment_id`, `run_id`), or
        None when it is not (or the file is unreadable)."""
        try:
            record = json.loads(self.mlflow_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        keys = ("tracking_uri", "experiment_id", "run_id")
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in keys):
            return None
        return {key: record[key] for key in keys}

    @_writes
    def write_mlflow_run(self, record: dict[str, str]) -> None:
        atomic_write_text(self.mlflow_file, json.dumps(record, indent=2) + "\n")

    # --- The model and the data -------------------------------------------------------------

    def load_model(self, *, unsafe: bool = False) -> keras.Model:
        """The run's Keras model, with one clear error if it is missing or unusable.

        A `.keras` file can hold Python code (a `Lambda` layer stores its function as
        bytecode), and loading it runs that code. Keras' safe mode stays on unless `unsafe`:
        such a file is refused with an `UnsafeModelError` that says what the risk is.
        """
        from cnnlab._backend import keras as _keras

        path = self.model_file
        if not path.is_file():
            hint = (
                "check the path"
                if path != self.dir / MODEL_FILE
                else ("train it first with `cnnlab train`")
            )
            raise RunError(f"{path}: no model found; {hint}")
        keras = _keras()
        from cnnlab.model.layers import custom_layers

        custom_layers()  # registers cnnlab's own layers, so models that use them load back
        try:
            return keras.saving.load_model(path, safe_mode=not unsafe)
        except Exception as exc:  # Keras raises many types for a damaged archive
            message = " ".join(str(exc).split())
            if not unsafe and "safe_mode" in message:
                raise UnsafeModelError(
                    f"{path}: refused: the file holds Python code (e.g. a Lambda layer), and "
                    "loading it would run that code with your permissions; if you trust where "
                    "the file came from, load it with --unsafe (Python: unsafe=True). "
                    f"Keras says: {message}"
                ) from None
            raise RunError(
                f"{path}: cannot load the model ({type(exc).__name__}: {message})"
            ) from None

    def data(self, data_dir: str | None = None, *, validation: bool = False) -> Feed:
        """The run's data as it trained on (`cnnlab.data.feed`): an image folder through the
        recipe its config.toml records, or a named or .npz dataset with no validation hold-out
        (the test set is what later stages read); `data_dir` overrides where a named dataset's
        files are looked for. With `validation`, a named or .npz dataset keeps the validation
        split the run trained with (its validation_split and seed), for what is fitted on it
        (the temperature of `cnnlab.calibration`); the test set is the same either way."""
        from cnnlab.data.feed import load_feed

        config = self.config()
        if not config.data.is_folder and not validation:
            config = config.replace(data={"validation_split": 0.0}, train={"seed": 0})
        return load_feed(config, data_dir=data_dir)

    # --- Housekeeping -----------------------------------------------------------------------

    @_writes
    def check_writable(self) -> None:
        """Raise RunError unless files can be written where the run folder is (or will be):
        a read-only or full disk is found before any work, and nothing is created."""
        import tempfile

        folder = self.dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:  # a file of its own (several processes may check at once), gone when closed
            with tempfile.TemporaryFile(dir=folder, prefix=".cnnlab-write-check.") as probe:
                probe.write(b"\0")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            raise RunError(
                f"{self.dir}: cannot write the run folder ({exc.strerror or exc}); free some "
                "space or choose another folder with --runs-dir (nothing was changed)"
            ) from None

    @_writes
    def make_dir(self) -> None:
        """Create the run folder (and its parents) if it does not exist yet, and remove the
        temporary files a killed writer left (the finished files are never half-written: each
        is written beside its name and renamed over it, see `cnnlab._io.atomic_path`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.dir, self.backup_dir):
            for leftover in folder.glob(".*") if folder.is_dir() else ():
                if leftover.is_file() and leftover.name.count(".") >= 2:
                    leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def training(self, *, wait_s: float = 0.5) -> Iterator[None]:
        """Hold the run's lock while this process trains it (a no-op when read-only).

        The lock is an `flock` on `.lock`, which the kernel drops with the process however it
        ends, so a run whose run.json says "running" while no process holds its lock was
        interrupted (`is_training`). A second process training the same folder fails here
        with a RunError instead of writing over the first one's files; a reader that checks
        the lock holds it for a moment, hence a short wait before giving up.
        """
        if self.read_only or fcntl is None:  # no flock (Windows): status from run.json alone
            yield
            return
        made = [folder for folder in (self.dir, *self.dir.parents) if not folder.exists()]
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait_s
            while not _try_lock(handle, fcntl.LOCK_EX):
                if time.monotonic() > deadline:
                    raise RunError(
                        f"{self.dir}: another process is training this run now; wait for it "
                        "to finish (`cnnlab runs` shows it), or train under another --name"
                    )
                time.sleep(0.02)
            try:
                yield
            finally:
                self.lock_file.unlink(missing_ok=True)
                for folder in made:  # training failed before writing anything: no empty run
                    with contextlib.suppress(OSError):
                        folder.rmdir()
        finally:
            os.close(handle)  # releases the lock

    def is_training(self) -> bool:
        """Whether a live process holds the run's lock (`training`) now. Opens the lock file
        read-only and never creates it, so asking changes nothing in the folder."""
        if fcntl is None:
            return self.state().running
        try:
            handle = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return False  # no lock file: nobody trains here (or a run older than the lock)
        try:
            if not _try_lock(handle, fcntl.LOCK_SH):
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
        finally:
            os.close(handle)

    @_writes
    def remove(self) -> None:
        """Delete the whole run folder (`--overwrite`); RunError, and nothing deleted, while
        another process trains it (`is_training`)."""
        if self.dir.exists():
            if self.is_training():
                raise RunError(
                    f"{self.dir}: another process is training this run now; --overwrite would "
                    "delete its files under it: wait for it to finish, or train under another "
                    "--name"
                )
            shutil.rmtree(self.dir)

    @_writes
    def remove_backup(self) -> None:
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def _try_lock(handle: int, kind: int) -> bool:
    """Take an flock of `kind` on `handle` without waiting; False where another holds it."""
    assert fcntl is not None
    try:
        fcntl.flock(handle, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def load_model(path: str | Path, *, unsafe: bool = False) -> keras.Model:
    """Load the model of a run folder, or a `.keras` file, with a clear error if unusable
    (`unsafe`: see `Run.load_model`)."""
    return Run.open(path).load_model(unsafe=unsafe)


def model_or_architecture(
    target: str | Path,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    *,
    unsafe: bool = False,
) -> keras.Model:
    """A trained run's model (a folder or a `.keras` file), else a fresh model built from the
    architecture named by `target` (a built-in name or a .toml/.json spec)."""
    path = Path(target)
    if path.is_dir() or path.suffix == ".keras":
        return Run.open(path).load_model(unsafe=unsafe)
    from cnnlab.model.builder import build_model

    if input_shape is None or num_classes is None:
        return build_model(str(target))
    return build_model(str(target), input_shape, num_classes)


def sidecar_path(path: str | Path) -> Path:
    """Where the metadata of an exported file lives: `model.onnx` -> `model.onnx.json`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The metadata `cnnlab export` wrote beside an exported file, or {} if none is readable."""
    sidecar = sidecar_path(path)
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def sidecar_class_names(info: dict[str, Any]) -> list[str] | None:
    """The class names an export's sidecar (`read_sidecar`) records, or None without them."""
    names = info.get("class_names")
    return [str(name) for name in names] if isinstance(names, list) else None


def _format_number(value: float, field: str) -> str:
    return str(int(value)) if field == "epoch" else repr(value)
