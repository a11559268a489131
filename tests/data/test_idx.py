"""IDX reader and writer: round trips and every way a file can be wrong."""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import content_sha256, read_idx, write_idx
from cnnlab.data.idx import read_idx_header
from cnnlab.errors import DataError


def _header(code: int, *dims: int) -> bytes:
    return struct.pack(f">HBB{len(dims)}I", 0, code, len(dims), *dims)


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path: Path, name: str, dtype: type) -> None:
    array: np.ndarray = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / name
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, array)
    assert read_idx_header(path).shape == (2, 3, 4)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    compressed, raw_named_gz = tmp_path / "a", tmp_path / "b.gz"
    write_idx(compressed, array, compress=True)
    write_idx(raw_named_gz, array, compress=False)
    np.testing.assert_array_equal(read_idx(compressed), array)
    np.testing.assert_array_equal(read_idx(raw_named_gz), array)


def test_content_sha256_ignores_compression(tmp_path: Path) -> None:
    array = np.arange(100, dtype=np.uint8).reshape(10, 10)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "a", array)
    expected = hashlib.sha256(_header(0x08, 10, 10) + array.tobytes()).hexdigest()
    assert content_sha256(tmp_path / "a.gz") == content_sha256(tmp_path / "a") == expected


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"x", "not an IDX file"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"x", "type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x05" + b"\x00\x00\x00\x01" * 5 + b"x", "5 dimensions"),
        (b"\x00\x00\x08\x02" + b"\x00\x00\x00\x03", "inside the header"),
        (_header(0x08, 3, 0), "empty dimension"),
        (_header(0x08, 3, 4) + bytes(5), "truncated: header says 3x4 (12 bytes) but only 5"),
        (_header(0x0B, 3) + bytes(5), "truncated: header says 3 (6 bytes)"),
        (_header(0x08, 3, 4) + bytes(13), "trailing bytes"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bad_files_raise_one_line_data_error(
    tmp_path: Path, content: bytes, problem: str, compress: bool
) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(DataError, match=re.escape(problem)) as info:
        read_idx(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))


def test_huge_header_fails_fast_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "bomb-idx"
    path.write_bytes(_header(0x0E, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError, match=r"over the .*-byte limit"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1
    assert peak < 1_000_000


def test_lying_header_under_the_cap_allocates_only_what_arrives(tmp_path: Path) -> None:
    path = tmp_path / "liar-idx.gz"
    path.write_bytes(gzip.compress(_header(0x08, 60000, 28, 28) + bytes(1234)))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"60000x28x28 \(47,040,000 bytes\) but only 1,234"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000


def test_gzip_bomb_is_cut_off_at_the_declared_size(tmp_path: Path) -> None:
    path = tmp_path / "bomb-idx.gz"
    with gzip.open(path, "wb") as out:
        out.write(_header(0x08, 10))
        for _ in range(64):  # 64 MiB of zeros in about 64 KiB of gzip
            out.write(bytes(2**20))
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)


def test_max_bytes_caps_the_payload(tmp_path: Path) -> None:
    write_idx(tmp_path / "a", np.zeros(100, np.uint8))
    with pytest.raises(DataError, match="limit"):
        read_idx(tmp_path / "a", max_bytes=99)


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_corrupt_gzip_stream(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "a.gz"
    write_idx(path, np.arange(5000, dtype=np.int32))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt gzip stream"):
        read_idx(path)
    with pytest.raises(DataError, match="corrupt gzip stream"):
        content_sha256(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="is a directory"):
        read_idx(tmp_path)


def test_write_refuses_what_idx_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dtype"):
        write_idx(tmp_path / "a", np.zeros(3, np.uint32))
    with pytest.raises(DataError, match="dimensions"):
        write_idx(tmp_path / "a", np.zeros((1, 1, 1, 1, 1), np.uint8))
    assert list(tmp_path.iterdir()) == []
