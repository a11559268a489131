"""Look-up order, checksum verification and downloads from a local mirror."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import shutil
import time
from pathlib import Path

import pytest
from idx_files import FILENAMES, Tiny, tiny_arrays, write_dataset

from cnnlab.data import cache_dir, locate, sources
from cnnlab.data.sources import FileSpec, verify
from cnnlab.errors import DataError


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_cache_dir_honours_xdg_and_aliases(tmp_path: Path) -> None:
    assert cache_dir("fashion-mnist") == tmp_path / "xdg-cache" / "cnnlab" / "fashion_mnist"


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'cifar'.*fashion_mnist"):
        locate("cifar")


def test_look_up_order(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given, env = tmp_path / "given", tmp_path / "env"
    for directory in (given, env / "tiny", cache_dir("tiny"), tiny.spec.system_dirs[0]):
        shutil.copytree(tiny.good_dir, directory)
    monkeypatch.setenv("CNNLAB_DATA", str(env))

    def origins(data_dir: Path | None = None) -> set[str]:
        located = locate("tiny", data_dir, download=False)
        assert {file.checksum for file in located.files.values()} == {"ok"}
        return {file.origin for file in located.files.values()}

    assert origins(given) == {"--data-dir"}
    assert locate("tiny", given)["train_images"].path.parent == given
    assert origins() == {"$CNNLAB_DATA"}
    assert locate("tiny")["train_images"].path.parent == env / "tiny"  # <dir>/<name> first
    monkeypatch.delenv("CNNLAB_DATA")
    assert origins() == {"cache"}
    shutil.rmtree(cache_dir("tiny"))
    assert origins() == {"system"}


def test_first_location_wins_per_file(tiny: Tiny, tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.mkdir()
    shutil.copy(tiny.good_dir / "train-labels-idx1-ubyte.gz", given)
    shutil.copytree(tiny.good_dir, cache_dir("tiny"))
    located = locate("tiny", given, download=False)
    assert located["train_labels"].origin == "--data-dir"
    assert located["train_images"].origin == "cache"


def test_missing_data_dir_is_an_error(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir is not a directory"):
        locate("tiny", tmp_path / "typo")


def test_unreadable_cache_file_is_downloaded_again(tiny: Tiny, mirror: tuple[str, Path]) -> None:
    url, root = mirror
    shutil.copytree(tiny.good_dir, root, dirs_exist_ok=True)
    shutil.copytree(tiny.good_dir, cache_dir("tiny"))
    broken = cache_dir("tiny") / "t10k-labels-idx1-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:-12])  # cut: the gzip stream ends early
    assert locate("tiny", mirror=url)["test_labels"].origin == "downloaded"
    assert broken.read_bytes() == (tiny.good_dir / broken.name).read_bytes()


def test_uncompressed_files_are_found(tiny: Tiny, tmp_path: Path) -> None:
    write_dataset(tmp_path / "raw", tiny.arrays, compress=False)
    located = locate("tiny", tmp_path / "raw", download=False)
    assert located["test_images"].path == tmp_path / "raw" / "t10k-images-idx3-ubyte"
    assert located["test_images"].checksum == "ok"  # content digest: compression is irrelevant


def test_explicit_location_is_trusted_despite_mismatch(
    tiny: Tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_dataset(tmp_path / "mine", tiny_arrays(seed=1))
    with caplog.at_level(logging.WARNING):
        located = locate("tiny", tmp_path / "mine", download=False)
    assert located["train_images"].origin == "--data-dir"
    assert located["train_images"].checksum == "mismatch"
    assert "does not match" in caplog.text


def test_bad_system_copy_is_skipped(
    tiny: Tiny, caplog: pytest.LogCaptureFixture, mirror: tuple[str, Path]
) -> None:
    write_dataset(tiny.spec.system_dirs[0], tiny_arrays(seed=1))
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="not found"):
        locate("tiny", download=False)
    assert "skipping this system copy" in caplog.text
    url, root = mirror
    shutil.copytree(tiny.good_dir, root, dirs_exist_ok=True)
    located = locate("tiny", mirror=url)
    assert located["train_images"].origin == "downloaded"
    assert located["train_labels"].origin == "system"  # the labels were never wrong


def test_corrupt_cache_file_is_downloaded_again(tiny: Tiny, mirror: tuple[str, Path]) -> None:
    url, root = mirror
    shutil.copytree(tiny.good_dir, root, dirs_exist_ok=True)
    cache = cache_dir("tiny")
    shutil.copytree(tiny.good_dir, cache)
    bad = cache / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"garbage"))

    located = locate("tiny", mirror=url)

    assert located["train_images"].origin == "downloaded"
    assert located["train_images"].checksum == "ok"
    assert located["train_images"].path == bad
    assert bad.read_bytes() == (tiny.good_dir / bad.name).read_bytes()
    assert located["train_labels"].origin == "cache"
    assert _files(cache) == sorted(cache / f"{name}.gz" for name in FILENAMES.values())


def test_corrupt_uncompressed_cache_file_is_replaced(tiny: Tiny, mirror: tuple[str, Path]) -> None:
    url, root = mirror
    shutil.copytree(tiny.good_dir, root, dirs_exist_ok=True)
    stale = cache_dir("tiny") / "t10k-labels-idx1-ubyte"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    located = locate("tiny", mirror=url)
    assert located["test_labels"].path == stale.with_name(stale.name + ".gz")
    assert not stale.exists()


def test_mirror_from_environment(
    tiny: Tiny, mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = mirror
    shutil.copytree(tiny.good_dir, root, dirs_exist_ok=True)
    monkeypatch.setenv("CNNLAB_MIRROR", url)
    assert locate("tiny")["test_labels"].origin == "downloaded"


def test_bad_download_raises_and_leaves_no_file(tiny: Tiny, mirror: tuple[str, Path]) -> None:
    url, root = mirror
    write_dataset(root, tiny_arrays(seed=1))
    with pytest.raises(DataError, match=f"{url}train-images-idx3-ubyte.gz: .*discarded"):
        locate("tiny", mirror=url)
    assert _files(cache_dir("tiny")) == []


def test_corrupt_gzip_download_is_discarded(tiny: Tiny, mirror: tuple[str, Path]) -> None:
    url, root = mirror
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="corrupt or does not match"):
        locate("tiny", mirror=url)
    assert _files(cache_dir("tiny")) == []


def test_http_error_names_the_url(tiny: Tiny, mirror: tuple[str, Path]) -> None:
    url, _ = mirror
    with pytest.raises(DataError, match=f"{url}train-images-idx3-ubyte.gz \\(HTTP 404") as info:
        locate("tiny", mirror=url)
    assert "--data-dir" in str(info.value)
    assert "\n" not in str(info.value)


def test_unreachable_mirror_fails_fast(tiny: Tiny, closed_port_url: str) -> None:
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"cannot download.*CNNLAB_DATA") as info:
        locate("tiny", mirror=closed_port_url)
    assert time.perf_counter() - start < 5
    assert closed_port_url in str(info.value)
    assert _files(cache_dir("tiny")) == []


def test_fashion_mnist_error_suggests_the_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = dataclasses.replace(sources.DATASETS["fashion_mnist"], system_dirs=())
    monkeypatch.setitem(sources.DATASETS, "fashion_mnist", spec)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        locate("fashion-mnist")


def test_interrupted_download_leaves_no_file(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(url: str, destination: Path) -> None:
        destination.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "_fetch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        locate("tiny", mirror="http://127.0.0.1:1/")
    assert _files(cache_dir("tiny")) == []


def test_gz_md5_is_the_fallback_digest(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert verify(path, FileSpec("labels", gz_md5=md5)) == "ok"
    assert verify(path, FileSpec("labels", gz_md5="0" * 32)) == "mismatch"
    assert verify(path, FileSpec("labels")) == "unknown"
    raw = tmp_path / "labels"
    raw.write_bytes(gzip.decompress(path.read_bytes()))
    assert verify(raw, FileSpec("labels", gz_md5=md5)) == "unknown"
