"""Fixtures: tiny IDX datasets written with `write_idx`, an isolated cache, a local mirror."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from idx_files import FILENAMES, N_CLASSES, Tiny, tiny_arrays, write_dataset

from cnnlab.data import content_sha256
from cnnlab.data.sources import DATASETS, DatasetSpec, FileSpec


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, closed_port_url: str) -> None:
    """No test sees the user's cache or data, and none can reach the internet."""
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("CNNLAB_MIRROR", closed_port_url)


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tiny:
    """Register dataset "tiny" whose recorded digests match the files in `good_dir`."""
    arrays = tiny_arrays()
    good_dir = tmp_path / "good"
    write_dataset(good_dir, arrays)

    def good(role: str) -> FileSpec:
        name = FILENAMES[role]
        return FileSpec(name, content_sha256=content_sha256(good_dir / f"{name}.gz"))

    spec = DatasetSpec(
        name="tiny",
        train_images=good("train_images"),
        train_labels=good("train_labels"),
        test_images=good("test_images"),
        test_labels=good("test_labels"),
        mirrors=(),
        class_names=tuple(str(index) for index in range(N_CLASSES)),
        system_dirs=(tmp_path / "system",),
    )
    monkeypatch.setitem(DATASETS, "tiny", spec)
    return Tiny(spec, good_dir, arrays)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving `tmp_path / "mirror"`: (base URL, folder)."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
