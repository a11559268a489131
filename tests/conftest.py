"""Shared fixtures: a tiny learnable dataset, a tiny architecture, and one trained tiny run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from synthetic import TINY_ARCH, make_tiny_config, write_tiny_npz

from cnnlab.config import Config


def pytest_report_header() -> str:
    """Which CPU and precision this run tests: the figures that differ between machines."""
    import os

    from cnnlab._backend import PRECISION_ENV
    from cnnlab._cpu import cpu_info, cpu_precision

    forced = os.environ.get(PRECISION_ENV)
    policy, reason = (forced, f"${PRECISION_ENV}") if forced else cpu_precision()
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return (
        f"cnnlab: {cpu_info().describe()}; Keras {backend}; --precision auto -> {policy} ({reason})"
    )


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An .npz dataset of 4 easy classes: 240 training and 80 test images."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    return write_tiny_npz(path, np.random.default_rng(0), train_per_class=60, test_per_class=20)


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.toml"
    path.write_text(TINY_ARCH)
    return path


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., Config]:
    return make_tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_npz: Path, tiny_arch: Path) -> Path:
    """A finished run folder of the tiny model (shared: tests must not modify it)."""
    from cnnlab.training.trainer import train

    runs = tmp_path_factory.mktemp("runs")
    result = train(make_tiny_config(runs, tiny_npz, tiny_arch, epochs=4))
    return result.run_dir


@pytest.fixture(scope="session")
def evaluated_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with its metrics.json written by `cnnlab evaluate` (so with the
    temperature and the unsure threshold); the shared tiny run stays unevaluated for others."""
    import shutil

    from cnnlab.evaluation import evaluate

    run = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("evaluated") / "tiny"))
    (run / "metrics.json").unlink(missing_ok=True)
    evaluate(run)
    return run
