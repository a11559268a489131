"""`cnnlab sweep`: a sweep file, Ray Tune trials as run folders, a table and a CSV, best first."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.training.sweep import load_sweep


def _sweep_file(folder: Path, npz: Path, arch: Path, parameters: str) -> Path:
    path = folder / "tiny_sweep.toml"
    path.write_text(
        f"""
seeds = [1]
max_concurrent = 1

[settings.data]
dataset = "{npz}"
validation_split = 0.25

[settings.model]
architecture = "{arch}"
init_filters = "random"

[settings.train]
epochs = 1
precision = "float32"

[settings.run]
runs_dir = "{folder / "runs"}"

[parameters]
{parameters}
"""
    )
    return path


def test_a_sweep_file_is_checked_before_any_trial(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path
) -> None:
    path = _sweep_file(
        tmp_path,
        tiny_npz,
        tiny_arch,
        '"train.learning_rate" = { loguniform = [1e-4, 1e-2] }\n'
        'train.optimizer = { grid = ["adam", "sgd"] }',
    )
    sweep = load_sweep(path)
    assert sweep.folder == tmp_path / "runs" / "tiny_sweep"
    assert sweep.parameters == {
        "train.learning_rate": {"loguniform": [1e-4, 1e-2]},
        "train.optimizer": {"grid": ["adam", "sgd"]},
    }
    assert sweep.base.train.epochs == 1 and sweep.seeds == (1,)
    assert sweep.size() == "2 trials"
    for bad, message in [
        ('"train.epochs" = { grid = [0, 1] }', "train.epochs must be >= 1"),
        ('"train.nope" = { grid = [1] }', "unknown setting train.nope"),
        ('"train.learning_rate" = { uniform = [0.1] }', r"\[low, high\]"),
        ('"train.learning_rate" = 0.1', "must be one of grid, choice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_sweep(_sweep_file(tmp_path, tiny_npz, tiny_arch, bad))


def test_without_ray_sweep_says_how_to_install_it(
    tmp_path: Path,
    tiny_npz: Path,
    tiny_arch: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    path = _sweep_file(tmp_path, tiny_npz, tiny_arch, '"train.optimizer" = { grid = ["sgd"] }')
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'cnnlab[distributed]'" in err


def test_two_trials_make_two_run_folders_a_table_and_a_csv(
    tmp_path: Path, tiny_npz: Path, tiny_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray.tune", reason="cnnlab[distributed] is not installed")
    path = _sweep_file(
        tmp_path, tiny_npz, tiny_arch, '"train.learning_rate" = { grid = [0.01, 0.0001] }'
    )
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "tiny_sweep"
    trials = sorted(p.name for p in folder.glob("trial-*"))
    assert trials == ["trial-000", "trial-001"]
    for trial in trials:
        assert (folder / trial / "model.keras").is_file()
        assert (folder / trial / "run.json").read_text().count('"finished"') == 1
    with (folder / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["train.learning_rate"]) for r in rows] == [0.01, 0.0001]  # best first
    assert float(rows[0]["val_accuracy"]) >= float(rows[1]["val_accuracy"])
    # Only the winner is evaluated on the test set.
    assert rows[0]["test_accuracy"] and not rows[1]["test_accuracy"]
    winner = Path(rows[0]["run_dir"])
    assert (winner / "metrics.json").is_file()
    assert not (Path(rows[1]["run_dir"]) / "metrics.json").exists()
    table = [line for line in out.splitlines() if line.startswith("| trial-")]
    assert len(table) == 2 and table[0].startswith(f"| {winner.name} |")
    assert "winner:" in out
    # Run again: the folder exists, so it is refused unless asked.
    assert main(["sweep", str(path)]) == 2


def test_the_shipped_example_sweep_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "benchmarks" / "sweep_recipes.toml"
    sweep = load_sweep(example)
    assert sweep.base.model.architecture == "resnet" and sweep.size() == "12 trials"


def test_each_kind_of_parameter_becomes_its_ray_tune_domain() -> None:
    tune = pytest.importorskip("ray.tune", reason="cnnlab[distributed] is not installed")
    from cnnlab.training.sweep import _ray_domain

    assert _ray_domain(tune, {"grid": [1, 2]}) == {"grid_search": [1, 2]}
    draws = {
        "choice": ["a", "b"],
        "uniform": [0.25, 0.5],
        "loguniform": [1e-4, 1e-2],
        "randint": [1, 4],
    }
    for kind, values in draws.items():
        domain = _ray_domain(tune, {kind: values})
        sampled = domain.sample(size=50)
        if kind == "choice":
            assert set(sampled) == set(values)
        else:
            assert all(values[0] <= v < values[1] for v in sampled), kind
