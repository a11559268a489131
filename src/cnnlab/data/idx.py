"""IDX files (the MNIST format): a size-checked reader, a writer, and a content digest.

The reader trusts nothing in the header: it checks the declared size against a cap before
reading, reads at most one byte more than declared, and so never lets a lying header or a
gzip bomb allocate more memory than the data actually present.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from cnnlab._io import atomic_path
from cnnlab.errors import DataError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "IdxHeader",
    "content_sha256",
    "read_idx",
    "read_idx_header",
    "write_idx",
]

MAX_PAYLOAD_BYTES = 4 * 2**30
"""Largest payload the reader accepts; real datasets in this format are far smaller."""

MAX_NDIM = 4  # N, H, W, C

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK_BYTES = 2**20
_FIX_HINT = "delete it and run `cnnlab data info` to fetch a fresh copy"

# Type code -> big-endian numpy dtype, as defined by the IDX format.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[np.dtype, int] = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX header declares: element type, shape, and the payload size they imply."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def payload_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_PAYLOAD_BYTES) -> np.ndarray:
    """Read a raw or gzip-compressed IDX file into a native-endian array of its declared shape."""
    path = Path(path)
    with _open_decompressed(path) as stream:
        header = _read_header(stream, path, max_bytes)
        expected = header.payload_bytes
        payload = bytearray()
        # Grow with the data that actually arrives, one byte past the declared end to
        # detect trailing garbage; a header that lies costs no more than the real data.
        while len(payload) <= expected:
            chunk = stream.read(min(_CHUNK_BYTES, expected + 1 - len(payload)))
            if not chunk:
                break
            payload += chunk
    if len(payload) < expected:
        raise _error(
            path,
            f"truncated: header says {_describe(header)} but only {len(payload):,} bytes follow",
        )
    if len(payload) > expected:
        raise _error(path, f"trailing bytes after the {_describe(header)} the header declares")
    array = np.frombuffer(payload, dtype=header.dtype).reshape(header.shape)
    return array if array.dtype.itemsize == 1 else array.astype(header.dtype.newbyteorder("="))


def read_idx_header(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_PAYLOAD_BYTES
) -> IdxHeader:
    """Read and check only the header, for listing a file's shape without loading it."""
    path = Path(path)
    with _open_decompressed(path) as stream:
        return _read_header(stream, path, max_bytes)


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None
) -> None:
    """Write `array` as an IDX file atomically; gzip-compressed if `compress` (default: `.gz`)."""
    path = Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(
            f"{path}: IDX cannot store dtype {array.dtype}; use one of uint8, int8, "
            "int16, int32, float32, float64"
        )
    if not 1 <= array.ndim <= MAX_NDIM or 0 in array.shape:
        raise DataError(
            f"{path}: IDX needs 1 to {MAX_NDIM} non-empty dimensions, got shape {array.shape}"
        )
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    payload = array.astype(_DTYPES[code], copy=False).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        # mtime=0 keeps the output byte-identical across runs.
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw
        with out:
            out.write(header)
            out.write(payload)


def content_sha256(path: str | os.PathLike[str], *, max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """SHA-256 of the decompressed content: a recompressed copy of the same data still matches."""
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    with _open_decompressed(path) as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise _error(path, f"decompresses to more than {max_bytes:,} bytes")
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _open_decompressed(path: Path) -> Iterator[_Readable]:
    """Open `path` for reading its content, decompressing if it starts with the gzip magic.

    Every failure to open or decompress, here or in the caller's reads, becomes a DataError.
    """
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an IDX file")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    yield stream
            else:
                yield raw
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise _error(path, f"corrupt gzip stream ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _read_header(stream: _Readable, path: Path, max_bytes: int) -> IdxHeader:
    prefix = stream.read(4)
    if not prefix:
        raise _error(path, "empty file")
    if len(prefix) < 4:
        raise _error(path, f"only {len(prefix)} bytes, too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", prefix)
    if zero != 0:
        raise _error(path, f"not an IDX file (magic {prefix[:2].hex()}, expected 0000)")
    if code not in _DTYPES:
        raise _error(path, f"unknown IDX type code 0x{code:02X}")
    if not 1 <= ndim <= MAX_NDIM:
        raise _error(path, f"header declares {ndim} dimensions, expected 1 to {MAX_NDIM}")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise _error(path, "truncated inside the header")
    header = IdxHeader(_DTYPES[code], struct.unpack(f">{ndim}I", dims))
    if 0 in header.shape:
        raise _error(path, f"header declares an empty dimension ({_shape(header.shape)})")
    if header.payload_bytes > max_bytes:
        raise _error(
            path, f"header declares {_describe(header)}, over the {max_bytes:,}-byte limit"
        )
    return header


def _error(path: Path, problem: str) -> DataError:
    return DataError(f"{path}: {problem}; {_FIX_HINT}")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(dim) for dim in shape)


def _describe(header: IdxHeader) -> str:
    return f"{_shape(header.shape)} ({header.payload_bytes:,} bytes)"
