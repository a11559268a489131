"""Grid and random search over config values and seeds: every trial a Ray Tune trial, and a
normal run folder trained by `cnnlab.train`.

A sweep file (TOML) names a base configuration, what varies, and how trials are ranked:

    name = "lr"                   # the sweep folder: <runs_dir>/<name>/ (default: file name)
    preset = "improved"           # optional: a preset, then a config file, then [settings]
    config = "base.toml"          # optional, relative to the sweep file
    metric = "val_accuracy"       # a validation metric of the best epoch; mode "max" or "min"
    mode = "max"
    seeds = [1, 2]                # every point of the search trained with each seed
    num_samples = 1               # random search: points drawn (grid: repeats of the grid)
    max_concurrent = 1            # trials at once
    cpus_per_trial = 1

    [settings.train]              # the same for every trial, as in a config file
    epochs = 10

    [parameters]                  # dotted config keys; one of grid, choice, uniform,
    "train.learning_rate" = { loguniform = [1e-4, 1e-2] }   # loguniform, randint
    "train.optimizer" = { grid = ["adam", "adamw"] }

The sweep folder holds one run folder per trial (`trial-000`, ...), `trials.csv` (every
trial's values and validation metrics, best first), `sweep.toml` (the file as run) and
`ray/` (Ray Tune's own records). Only the winner is evaluated on the test set.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab._io import atomic_write_text
from cnnlab.config import Config, load_config, read_toml
from cnnlab.errors import CnnlabError, ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'cnnlab[distributed]'"
KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
MODES = ("max", "min")
TRIALS_FILE = "trials.csv"
_KEYS = {
    "name",
    "preset",
    "config",
    "runs_dir",
    "metric",
    "mode",
    "seeds",
    "num_samples",
    "max_concurrent",
    "cpus_per_trial",
    "sampler_seed",
    "settings",
    "parameters",
}
_SHOWN_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: the base config, what varies, and how trials are ranked."""

    name: str
    base: Config
    parameters: dict[str, dict[str, list[Any]]]
    folder: Path
    metric: str = "val_accuracy"
    mode: str = "max"
    seeds: tuple[int, ...] = ()
    num_samples: int = 1
    max_concurrent: int = 1
    cpus_per_trial: float = 1.0
    sampler_seed: int | None = 0
    source: str = ""  # the sweep file's text, copied into the sweep folder

    def size(self) -> str:
        """How many trials, in words (random parameters make num_samples draws)."""
        grid = math.prod(len(s["grid"]) for s in self.parameters.values() if "grid" in s)
        total = grid * max(1, len(self.seeds)) * self.num_samples
        return f"{total} trials"


@dataclass
class SweepResult:
    """What a sweep leaves: its folder, every trial (best first) and the winner's test metrics."""

    folder: Path
    trials: list[dict[str, Any]]
    winner_test: dict[str, Any] = field(default_factory=dict)

    @property
    def trials_file(self) -> Path:
        return self.folder / TRIALS_FILE


def load_sweep(path: str | Path, *, out: str | Path | None = None) -> Sweep:
    """Read and check a sweep file; `out` overrides where the sweep folder goes."""
    path = Path(path)
    data = read_toml(path)
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_KEYS))}"
        )
    config_file = data.get("config")
    base = load_config(
        None if config_file is None else path.parent / str(config_file),
        preset=data.get("preset"),
        overrides=_flatten(_table(data, "settings", path), path),
    )
    parameters = {
        key: _spec(key, value, path)
        for key, value in _flatten(_table(data, "parameters", path), path, specs=True).items()
    }
    seeds = tuple(_ints(data.get("seeds", []), f"{path}: seeds"))
    if seeds and "train.seed" in parameters:
        raise ConfigError(f"{path}: give the seeds either as seeds = [...] or as train.seed")
    for key, spec in parameters.items():
        for value in _extremes(spec):
            section, _, name = key.partition(".")
            base.replace(**{section: {name: value}})  # a ConfigError names a bad key or value
    mode = str(data.get("mode", "max"))
    if mode not in MODES:
        raise ConfigError(f"{path}: mode must be max or min, got {mode!r}")
    name = str(data.get("name") or path.stem)
    folder = Path(out) if out else Path(str(data.get("runs_dir") or base.run.runs_dir)) / name
    sweep = Sweep(
        name=name,
        base=base,
        parameters=parameters,
        folder=folder,
        metric=str(data.get("metric", "val_accuracy")),
        mode=mode,
        seeds=seeds,
        num_samples=_positive(data.get("num_samples", 1), f"{path}: num_samples"),
        max_concurrent=_positive(data.get("max_concurrent", 1), f"{path}: max_concurrent"),
        cpus_per_trial=float(_positive(data.get("cpus_per_trial", 1), f"{path}: cpus_per_trial")),
        sampler_seed=_ints([data.get("sampler_seed", 0)], f"{path}: sampler_seed")[0],
        source=path.read_text(encoding="utf-8"),
    )
    if sweep.metric.startswith("val_") and base.data.validation_split == 0:
        raise ConfigError(
            f"{path}: metric {sweep.metric} needs a validation split; the base config has "
            "data.validation_split = 0 (the test set never chooses the winner)"
        )
    return sweep


def run_sweep(sweep: Sweep, *, address: str | None = None, overwrite: bool = False) -> SweepResult:
    """Train every trial of `sweep` on Ray Tune (a local instance, or the cluster at
    `address`), write trials.csv best first, and evaluate the winner on the test set."""
    tune, ray = _import_ray()
    folder = sweep.folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise CnnlabError(
                f"{folder}: the sweep folder exists; add --overwrite to run the sweep again "
                "(its trials are deleted), or --out NEW"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "sweep.toml", sweep.source)
    base_toml = sweep.base.to_toml()
    cwd = os.getcwd()

    def trial(params: dict[str, Any]) -> None:
        """One trial: a normal run folder in the sweep folder, its best epoch reported."""
        from ray import tune as trial_tune

        from cnnlab.training.trainer import train

        if os.path.isdir(cwd):
            os.chdir(cwd)  # Tune starts a trial in its own folder; config paths are relative
        trial_id = trial_tune.get_context().get_trial_id()
        number = trial_id.rpartition("_")[2]
        name = f"trial-{int(number):03d}" if number.isdigit() else f"trial-{trial_id}"
        config = Config.from_toml(base_toml)
        config = config.replace(**_nest(params), run={"runs_dir": str(folder), "name": name})
        result = train(config)
        state = result.state
        trial_tune.report(
            {
                **state.best_metrics,
                "run_dir": str(result.run_dir),
                "best_epoch": state.best_epoch,
                "epochs_run": state.epochs_run,
                "train_seconds": state.train_seconds,
            }
        )

    space: dict[str, Any] = {key: _ray_domain(tune, spec) for key, spec in sweep.parameters.items()}
    if sweep.seeds:
        space["train.seed"] = tune.grid_search(list(sweep.seeds))
    log.info("sweep %s: %s in %s", sweep.name, sweep.size(), folder)
    started_here = _start_ray(ray, address, sweep)
    try:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": sweep.cpus_per_trial}),
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=sweep.num_samples,
                search_alg=BasicVariantGenerator(
                    random_state=sweep.sampler_seed, max_concurrent=sweep.max_concurrent
                ),
            ),
            run_config=tune.RunConfig(
                name="ray", storage_path=str(folder), verbose=0, log_to_file=True
            ),
        )
        grid = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    rows = _rows(grid, sweep)
    result = SweepResult(folder, rows)
    winner = rows[0] if rows and rows[0]["status"] == "done" else None
    if winner is not None:
        from cnnlab.evaluation import evaluate

        result.winner_test = evaluate(winner["run_dir"])
        winner["test_accuracy"] = result.winner_test.get("test_accuracy")
        winner["test_loss"] = result.winner_test.get("test_loss")
    atomic_write_text(result.trials_file, _csv(rows))
    if winner is None:
        raise CnnlabError(f"{folder}: no trial finished; see {folder / 'ray'} for their errors")
    return result


def format_table(result: SweepResult, sweep: Sweep) -> str:
    """The trials, best first, as a Markdown table (the winner's test figures last)."""
    keys = [*sweep.parameters, *(["train.seed"] if sweep.seeds else [])]
    shown = [m for m in dict.fromkeys([sweep.metric, *_SHOWN_METRICS])]
    columns = ["trial", *keys, *shown, "epochs", "train s", "test_accuracy"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in result.trials:
        cells = [row["trial"], *(row.get(k) for k in keys), *(row.get(m) for m in shown)]
        cells += [row.get("epochs_run"), row.get("train_seconds"), row.get("test_accuracy")]
        if row["status"] != "done":
            cells[len(keys) + 1] = row["status"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --- The sweep file --------------------------------------------------------------------------


def _table(data: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return dict(table)


def _flatten(table: Mapping[str, Any], path: Path, *, specs: bool = False) -> dict[str, Any]:
    """`{"train": {"epochs": 1}}` and `{"train.epochs": 1}` alike, as dotted keys. With
    `specs`, a table with one of KINDS as its key is a value, not a section."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        is_spec = specs and isinstance(value, Mapping) and set(value) & set(KINDS)
        if isinstance(value, Mapping) and not is_spec and "." not in key:
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = item
        else:
            flat[key] = value
    for key in flat:
        if key.count(".") != 1:
            raise ConfigError(f"{path}: {key!r} must be a section.setting such as train.epochs")
    return flat


def _spec(key: str, value: Any, path: Path) -> dict[str, list[Any]]:
    where = f"{path}: parameters {key}"
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in KINDS:
        raise ConfigError(f"{where} must be one of {', '.join(KINDS)} = [...], got {value!r}")
    kind, values = next(iter(value.items()))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} needs a non-empty list")
    if kind in ("uniform", "loguniform", "randint"):
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if len(values) != 2 or not numbers or not values[0] < values[1]:
            raise ConfigError(f"{where}: {kind} = [low, high] with low < high, got {values!r}")
        if kind == "loguniform" and values[0] <= 0:
            raise ConfigError(f"{where}: loguniform needs low > 0")
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise ConfigError(f"{where}: randint = [low, high] takes whole numbers")
    return {kind: list(values)}


def _extremes(spec: Mapping[str, list[Any]]) -> list[Any]:
    """The values to check a parameter with: every listed one, or a range's ends."""
    kind, values = next(iter(spec.items()))
    if kind == "randint":
        return [values[0], values[1] - 1]
    return list(values)


def _ints(values: Any, where: str) -> list[int]:
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise ConfigError(f"{where} must be whole numbers >= 0, got {values!r}")
    return values


def _positive(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where} must be a whole number >= 1, got {value!r}")
    return value


def _nest(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    return nested


# --- Ray -------------------------------------------------------------------------------------


def require_ray() -> None:
    """One clear line (how to install it) where Ray Tune is missing."""
    _import_ray()


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import tune
    except ImportError:
        raise CnnlabError(
            f"cnnlab sweep runs its trials on Ray Tune, which is not installed: {INSTALL_HINT}"
        ) from None
    return tune, ray


def _ray_domain(tune: Any, spec: Mapping[str, list[Any]]) -> Any:
    kind, values = next(iter(spec.items()))
    if kind == "grid":
        return tune.grid_search(values)
    if kind == "choice":
        return tune.choice(values)
    return getattr(tune, kind)(*values)


def _start_ray(ray: Any, address: str | None, sweep: Sweep) -> bool:
    """Connect to the cluster at `address`, or start a small quiet local Ray; True if this
    call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report over the network
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress boxes
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(
            address="local",
            num_cpus=max(1, math.ceil(sweep.max_concurrent * sweep.cpus_per_trial)),
            object_store_memory=100 * 2**20,  # trials pass only a few numbers back
            **quiet,
        )
    return True


def _rows(grid: Any, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial: its values, metrics and run folder, best first, failures last."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        params = {k: v for k, v in (result.config or {}).items()}
        run_dir = metrics.get("run_dir", "")
        row: dict[str, Any] = {
            "trial": Path(run_dir).name if run_dir else "?",
            **params,
            **{k: v for k, v in metrics.items() if k in (*_SHOWN_METRICS, sweep.metric)},
            "best_epoch": metrics.get("best_epoch"),
            "epochs_run": metrics.get("epochs_run"),
            "train_seconds": metrics.get("train_seconds"),
            "run_dir": run_dir,
            "status": "done" if result.error is None and sweep.metric in metrics else "failed",
        }
        if result.error is not None:
            row["error"] = " ".join(str(result.error).split())[:200]
        rows.append(row)
    sign = -1.0 if sweep.mode == "max" else 1.0
    return sorted(
        rows,
        key=lambda r: (r["status"] != "done", sign * float(r.get(sweep.metric) or 0.0)),
    )


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
