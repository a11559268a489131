"""Fixtures for the prediction tests: a tiny colour run with a folder recipe, and its pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
from colour_run import write_colour_run, write_pictures


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the tiny RGB model with a 16x16 rgb squash recipe (shared: read only)."""
    return write_colour_run(tmp_path_factory.mktemp("colour") / "colour-run")


@pytest.fixture(scope="session")
def colour_pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, str]:
    """JPEG, PNG, RGBA and palette files of every colour: path -> colour."""
    return write_pictures(tmp_path_factory.mktemp("colour-pictures"))
