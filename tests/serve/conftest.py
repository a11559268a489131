"""Fixtures for the web app: the app over the tiny run, a live uvicorn server, test images."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from serve_helpers import LiveServer
from synthetic import CLASS_NAMES, make_images

from cnnlab.serve import create_app

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; httpx is what this project installs.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def app(tiny_run: Path) -> FastAPI:
    return create_app(tiny_run)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a 500 is checked as the response a real client would get.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def images() -> list[tuple[str, np.ndarray]]:
    """Two easy 28x28 uint8 images per class, with the class they show."""
    labels = np.repeat(np.arange(len(CLASS_NAMES)), 2)
    arrays = make_images(labels, np.random.default_rng(123))
    return [(CLASS_NAMES[label], array) for label, array in zip(labels, arrays, strict=True)]


@pytest.fixture(scope="session")
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-written run of a tiny RGB model with a 16x16 rgb squash folder recipe
    (`colour_run.write_colour_run`; shared: read only)."""
    from colour_run import write_colour_run

    return write_colour_run(tmp_path_factory.mktemp("colour") / "colour-run")


@pytest.fixture(scope="session")
def colour_app(colour_run: Path) -> FastAPI:
    return create_app(colour_run)


@pytest.fixture(scope="session")
def colour_client(colour_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(colour_app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def evaluated_app(evaluated_run: Path) -> FastAPI:
    """The app over the evaluated tiny run: its test predictions are recorded."""
    return create_app(evaluated_run)


@pytest.fixture(scope="session")
def colour_folder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour run with a real image folder behind it, evaluated: a folder-trained run's
    test predictions, with mistakes (`colour_run.MISLABELLED`); shared: read only."""
    from colour_run import write_colour_folder, write_evaluated_colour_run

    root = tmp_path_factory.mktemp("colour-folder")
    return write_evaluated_colour_run(root / "colour-run", write_colour_folder(root / "colours"))


@pytest.fixture(scope="session")
def colour_folder_app(colour_folder_run: Path) -> FastAPI:
    return create_app(colour_folder_run)
