"""Where dataset files come from: the look-up order, checksum verification and download.

Look-up, per file: `--data-dir`, then `$CNNLAB_DATA` (both trusted: a checksum mismatch is only
a warning, since users may bring their own IDX data), then the user cache and the system
directories (both verified: a bad cache file is downloaded again, a bad system file skipped),
and last a download into the cache.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from cnnlab._io import atomic_path
from cnnlab.data.idx import content_sha256
from cnnlab.errors import DataError

__all__ = [
    "DATASETS",
    "ROLES",
    "DatasetSpec",
    "FileSpec",
    "LocatedDataset",
    "LocatedFile",
    "cache_dir",
    "locate",
    "locate_each",
    "normalize_name",
    "verify",
]

logger = logging.getLogger(__name__)

ROLES = ("train_images", "train_labels", "test_images", "test_labels")
DOWNLOAD_TIMEOUT_S = 60.0
MAX_DOWNLOAD_BYTES = 2**30
DATA_ENV = "CNNLAB_DATA"
MIRROR_ENV = "CNNLAB_MIRROR"

Checksum = Literal["ok", "mismatch", "unknown"]
Origin = Literal["--data-dir", "$CNNLAB_DATA", "cache", "system", "downloaded"]


@dataclass(frozen=True)
class FileSpec:
    """One dataset file, named without `.gz`, and the digests that identify its content."""

    filename: str
    content_sha256: str | None = None
    gz_md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset in IDX files: its four files, where to download them, and its class names."""

    name: str
    train_images: FileSpec
    train_labels: FileSpec
    test_images: FileSpec
    test_labels: FileSpec
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    system_dirs: tuple[Path, ...] = ()
    install_hint: str = ""

    @property
    def files(self) -> dict[str, FileSpec]:
        """The four files by role (see `ROLES`)."""
        return {role: getattr(self, role) for role in ROLES}


@dataclass(frozen=True)
class LocatedFile:
    """Where one file was found, and whether its content matched the recorded digest."""

    role: str
    path: Path
    origin: Origin
    checksum: Checksum


@dataclass(frozen=True)
class LocatedDataset:
    """A dataset whose four files have all been found (or downloaded)."""

    spec: DatasetSpec
    files: dict[str, LocatedFile]

    def __getitem__(self, role: str) -> LocatedFile:
        return self.files[role]


# Digests are of the decompressed IDX content, not of the .gz files: Debian recompressed the
# archives (its train-labels .gz is 29,491 bytes, the official one 29,515) yet both decompress
# to identical bytes. Measured on Debian's dataset-fashion-mnist package.
FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    train_images=FileSpec(
        "train-images-idx3-ubyte",  # 47,040,016 bytes
        content_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    train_labels=FileSpec(
        "train-labels-idx1-ubyte",  # 60,008 bytes
        content_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    test_images=FileSpec(
        "t10k-images-idx3-ubyte",  # 7,840,016 bytes
        content_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    test_labels=FileSpec(
        "t10k-labels-idx1-ubyte",  # 10,008 bytes
        content_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    install_hint="`apt-get install dataset-fashion-mnist`",
)

# No copy of MNIST was at hand to measure content digests, so these are the MD5s of the official
# .gz files; they verify downloads from the mirror, while a recompressed copy reports "unknown".
MNIST = DatasetSpec(
    name="mnist",
    train_images=FileSpec("train-images-idx3-ubyte", gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    train_labels=FileSpec("train-labels-idx1-ubyte", gz_md5="d53e105ee54ea40749a09fcbcd1e9432"),
    test_images=FileSpec("t10k-images-idx3-ubyte", gz_md5="9fb629c4189551a2d022fa330f9573f3"),
    test_labels=FileSpec("t10k-labels-idx1-ubyte", gz_md5="ec29112dd5afa0611ce80d1b7f02629c"),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    class_names=tuple(str(digit) for digit in range(10)),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (FASHION_MNIST, MNIST)}
"""Known IDX datasets by name; add a `DatasetSpec` here to make `locate` find another one."""


def normalize_name(name: str) -> str:
    """Accept `fashion-mnist` for `fashion_mnist`: dashes are what users type."""
    return name.strip().lower().replace("-", "_")


def cache_dir(name: str) -> Path:
    """The per-user download cache for dataset `name` (honours `$XDG_CACHE_HOME`)."""
    return platformdirs.user_cache_path("cnnlab") / normalize_name(name)


def locate(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirror: str | None = None,
) -> LocatedDataset:
    """Find the four files of dataset `name`, downloading missing ones unless `download=False`.

    `mirror` (or `$CNNLAB_MIRROR`) replaces the dataset's download base URL.
    """
    spec = _spec(name)
    mirrors = _mirrors(spec, mirror)
    files = {
        role: _locate_file(spec, role, file, data_dir, download=download, mirrors=mirrors)
        for role, file in spec.files.items()
    }
    return LocatedDataset(spec, files)


def locate_each(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirror: str | None = None,
) -> dict[str, LocatedFile | DataError]:
    """Like `locate`, but a file that cannot be found, fetched or read gets its error in its
    slot instead of stopping the others (for listing every file, as `sha256sum -c` does).

    Problems that concern every file (an unknown dataset, a `--data-dir` that is not a
    folder) still raise.
    """
    spec = _spec(name)
    mirrors = _mirrors(spec, mirror)
    list(_explicit_dirs(spec, data_dir))  # a mistyped --data-dir is one error, not four
    found: dict[str, LocatedFile | DataError] = {}
    for role, file in spec.files.items():
        try:
            found[role] = _locate_file(
                spec, role, file, data_dir, download=download, mirrors=mirrors
            )
        except DataError as exc:
            found[role] = exc
    return found


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[normalize_name(name)]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}") from None


def _mirrors(spec: DatasetSpec, mirror: str | None) -> tuple[str, ...]:
    override = mirror or os.environ.get(MIRROR_ENV)
    return (override,) if override else spec.mirrors


def _explicit_dirs(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None
) -> Iterator[tuple[Path, Origin]]:
    """The trusted locations: `<dir>/<name>` if that exists, else `<dir>` itself."""
    env_dir = os.environ.get(DATA_ENV)
    given: list[tuple[str | os.PathLike[str] | None, Origin]] = [
        (data_dir, "--data-dir"),
        (env_dir, "$CNNLAB_DATA"),
    ]
    for directory, origin in given:
        if not directory:
            continue
        base = Path(directory).expanduser()
        if not base.is_dir():
            # A mistyped --data-dir must not silently fall through to a download.
            raise DataError(f"{base}: {origin} is not a directory; fix the path or leave it out")
        yield (base / spec.name if (base / spec.name).is_dir() else base), origin


def _present(directory: Path, file: FileSpec) -> Path | None:
    """The file in `directory`, compressed or not, preferring the `.gz` copy."""
    for candidate in (directory / f"{file.filename}.gz", directory / file.filename):
        if candidate.is_file():
            return candidate
    return None


def _locate_file(
    spec: DatasetSpec,
    role: str,
    file: FileSpec,
    data_dir: str | os.PathLike[str] | None,
    *,
    download: bool,
    mirrors: tuple[str, ...],
) -> LocatedFile:
    searched: list[Path] = []
    for directory, origin in _explicit_dirs(spec, data_dir):
        searched.append(directory)
        if path := _present(directory, file):
            status = verify(path, file)
            if status == "mismatch":
                logger.warning(
                    "%s: content does not match the recorded %s digest; using it anyway "
                    "since it was given through %s",
                    path,
                    spec.name,
                    origin,
                )
            return LocatedFile(role, path, origin, status)

    cache = cache_dir(spec.name)
    searched.append(cache)
    stale = _present(cache, file)
    if stale is not None:
        status = _verify_unreadable_as_mismatch(stale, file)
        if status != "mismatch":
            return LocatedFile(role, stale, "cache", status)
        logger.warning("%s: checksum mismatch in the cache; it will be replaced", stale)

    for directory in spec.system_dirs:
        searched.append(directory)
        if path := _present(directory, file):
            status = _verify_unreadable_as_mismatch(path, file)
            if status != "mismatch":
                return LocatedFile(role, path, "system", status)
            logger.warning("%s: checksum mismatch; skipping this system copy", path)

    if not download:
        where = ", ".join(str(directory) for directory in searched)
        raise DataError(
            f"{spec.name}: {file.filename}[.gz] not found (or failed its checksum) in {where} "
            f"and downloading is off; {_where_hint(spec)}"
        )
    path = _download(spec, file, mirrors, cache)
    if stale is not None and stale != path:
        stale.unlink(missing_ok=True)
    return LocatedFile(role, path, "downloaded", verify(path, file))


def verify(path: Path, file: FileSpec) -> Checksum:
    """Compare `path` with the recorded digest: content SHA-256 first, else the `.gz` MD5."""
    if file.content_sha256:
        return "ok" if content_sha256(path) == file.content_sha256 else "mismatch"
    if file.gz_md5 and path.suffix == ".gz":
        md5 = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            while chunk := handle.read(2**20):
                md5.update(chunk)
        return "ok" if md5.hexdigest() == file.gz_md5 else "mismatch"
    return "unknown"


def _download(spec: DatasetSpec, file: FileSpec, mirrors: tuple[str, ...], cache: Path) -> Path:
    """Fetch `<mirror>/<file>.gz` into the cache, atomically, and keep it only if it verifies."""
    target = cache / f"{file.filename}.gz"
    failures: list[str] = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{file.filename}.gz"
        logger.info("downloading %s to %s", url, target)
        try:
            with atomic_path(target) as tmp:
                _fetch(url, tmp)
                if _verify_unreadable_as_mismatch(tmp, file) == "mismatch":
                    raise DataError(
                        f"{url}: the downloaded file is corrupt or does not match the recorded "
                        f"checksum, so it was discarded. {_where_hint(spec)}"
                    )
        except urllib.error.HTTPError as exc:
            failures.append(f"{url} (HTTP {exc.code} {exc.reason})")
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            failures.append(f"{url} ({getattr(exc, 'reason', None) or exc})")
        else:
            return target
    tried = "; ".join(failures) or "no mirror is configured"
    raise DataError(f"{spec.name}: cannot download {file.filename}: {tried}. {_where_hint(spec)}")


def _verify_unreadable_as_mismatch(path: Path, file: FileSpec) -> Checksum:
    """Like `verify`, but a file that cannot even be decompressed counts as a mismatch."""
    try:
        return verify(path, file)
    except DataError:
        return "mismatch"


def _fetch(url: str, destination: Path) -> None:
    """Stream `url` to `destination`, refusing more than `MAX_DOWNLOAD_BYTES`."""
    request = urllib.request.Request(url, headers={"User-Agent": "cnnlab"})
    with (
        urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
        open(destination, "wb") as out,
    ):
        limited = _LimitedReader(response, MAX_DOWNLOAD_BYTES, url)
        shutil.copyfileobj(limited, out)


class _LimitedReader:
    """A file-like wrapper that raises once more than `limit` bytes have been read."""

    def __init__(self, stream: http.client.HTTPResponse, limit: int, url: str) -> None:
        self._stream, self._limit, self._url, self._seen = stream, limit, url, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._seen += len(chunk)
        if self._seen > self._limit:
            raise DataError(f"{self._url}: response exceeds {self._limit:,} bytes; refusing it")
        return chunk


def _where_hint(spec: DatasetSpec) -> str:
    hint = f"Put the files in a folder and pass --data-dir or set ${DATA_ENV}"
    if spec.install_hint:
        hint += f", or run {spec.install_hint}"
    return hint + "."
