"""Tests for cnnlab.data.images: reading any picture safely, or one ImageError naming it."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile

from cnnlab.data.images import MAX_PIXELS, TooManyPixels, check_unit_range, load_image, read_size
from cnnlab.errors import ImageError

SIZE = (28, 28)


def draw_ellipse(mode: str, size: tuple[int, int], background: object, fill: object) -> Image.Image:
    """An ellipse in the middle half of the picture."""
    image = Image.new(mode, size, background)  # type: ignore[arg-type]
    width, height = size
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4),
        fill=fill,  # type: ignore[arg-type]
    )
    return image


def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of the given size, a few KB for millions of pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    rows_per_block = max(1, 4_000_000 // len(row))
    idat = b""
    for start in range(0, height, rows_per_block):
        idat += compressor.compress(row * min(rows_per_block, height - start))
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# --- Good pictures -------------------------------------------------------------------------


def test_load_image_returns_a_decoded_upright_image(tmp_path: Path) -> None:
    path = tmp_path / "ellipse.png"
    draw_ellipse("RGB", (80, 60), "white", "black").save(path)

    image = load_image(path)

    assert image.size == (80, 60) and image.mode == "RGB"
    assert image.getpixel((40, 30)) == (0, 0, 0)


# --- Bad inputs: always ImageError, naming the source, on one line -------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.png"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    return path


def _truncated(suffix: str) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        rng = np.random.default_rng(3)
        buffer = io.BytesIO()
        noise = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # incompressible
        Image.fromarray(noise).save(buffer, format="PNG" if suffix == "png" else "JPEG")
        path = tmp_path / f"cut.{suffix}"
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        return path

    return make


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        pytest.param(_missing, "no such file", id="missing"),
        pytest.param(_directory, "directory", id="directory"),
        pytest.param(_empty, "empty", id="empty"),
        pytest.param(_text, "not an image", id="text-named-png"),
        pytest.param(_truncated("png"), "truncated or corrupt", id="truncated-png"),
        pytest.param(_truncated("jpg"), "truncated or corrupt", id="truncated-jpeg"),
    ],
)
def test_bad_files_raise_image_error_naming_the_file(
    tmp_path: Path, make: Callable[[Path], Path], problem: str
) -> None:
    path = make(tmp_path)

    with pytest.raises(ImageError) as caught:
        load_image(path)

    message = str(caught.value)
    assert path.name in message and problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        pytest.param(np.full((30, 30), np.nan, np.float32), "NaN", id="nan"),
        pytest.param(np.full(SIZE, np.inf), "NaN or infinite", id="inf-model-sized"),
        pytest.param(np.zeros((2, 30, 30, 3), np.uint8), "shape", id="rank-4"),
        pytest.param(np.zeros(784, np.uint8), "shape", id="flat"),
        pytest.param(np.zeros((30, 30, 2), np.uint8), "shape", id="two-channels"),
        pytest.param(np.zeros((0, 30), np.uint8), "no pixels", id="no-pixels"),
        pytest.param(np.full((30, 30), 255.0), "[0, 1]", id="float-0-255"),
        pytest.param(np.full(SIZE, 300, np.int64), "0..255", id="int-300"),
        pytest.param(np.zeros((30, 30), np.complex64), "dtype", id="complex"),
    ],
)
def test_bad_arrays_raise_image_error(array: np.ndarray, problem: str) -> None:
    with pytest.raises(ImageError, match=r"^<array [0-9x]*>: ") as caught:
        load_image(array)

    assert problem in str(caught.value)


def test_garbage_bytes_and_wrong_types_raise_image_error() -> None:
    with pytest.raises(ImageError, match=r"^<bytes>: not an image"):
        load_image(b"GIF89a but not really")
    with pytest.raises(ImageError, match=r"^<list>: not an image source"):
        load_image([[0, 1], [1, 0]])  # type: ignore[arg-type]
    with pytest.raises(ImageError, match=r"^<StringIO>: .*binary mode"):
        load_image(io.StringIO("text"))  # type: ignore[arg-type]


def test_file_over_the_byte_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    draw_ellipse("RGB", (100, 100), "white", "black").save(path)

    with pytest.raises(ImageError, match=r"big\.png: the file is over the 100-byte limit"):
        load_image(path, max_file_bytes=100)
    with pytest.raises(ImageError, match=r"over the 100-byte limit"):
        load_image(io.BytesIO(path.read_bytes()), max_file_bytes=100)


@pytest.mark.parametrize(
    ("width", "height", "problem"),
    [(8_000, 6_000, "48,000,000 pixels is over the limit"), (30_000, 30_000, "too many pixels")],
    ids=["over-our-limit", "over-pillows-limit"],
)
def test_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int, problem: str
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(width, height))
    assert path.stat().st_size < 200_000
    assert width * height > MAX_PIXELS
    decoded: list[ImageFile.ImageFile] = []
    real_load = ImageFile.ImageFile.load

    def spying_load(self: ImageFile.ImageFile) -> object:
        decoded.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spying_load)

    with pytest.raises(ImageError) as caught:
        load_image(path)

    assert "bomb.png" in str(caught.value) and problem in str(caught.value)
    assert decoded == []


def test_the_bomb_guard_holds_while_other_threads_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's bomb warning is made an error inside `warnings.catch_warnings`, which swaps
    process-wide state: threads decoding at once (the server's requests) must not lift each
    other's guard, nor refuse each other's good pictures."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # Pillow warns from 1M, fails at 2M
    real_open = Image.open
    inside = [0, 0]  # threads in Pillow now, most at once

    def slow_open(*args: object, **kwargs: object) -> object:  # a slow decoder: threads meet
        inside[0] += 1
        inside[1] = max(inside)
        time.sleep(0.002)
        inside[0] -= 1
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", slow_open)
    bomb = png_bomb(1_200, 1_000)
    buffer = io.BytesIO()
    Image.new("L", (64, 48), 90).save(buffer, format="PNG")
    fine = buffer.getvalue()

    def outcome(index: int) -> str:
        try:
            load_image(bomb if index % 2 else fine, max_pixels=10_000_000)
        except ImageError as exc:
            return "refused" if "too many pixels" in str(exc) else str(exc)
        return "decoded"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(outcome, range(600)))
    assert outcomes == ["decoded", "refused"] * 300
    assert inside[1] == 1  # one decode at a time, while the guard has the warning filters


def test_pixel_limit_applies_to_arrays_and_can_be_raised(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="pixels is over the limit of 100"):
        load_image(np.zeros((20, 20), np.uint8), max_pixels=100)
    path = tmp_path / "small.png"
    Image.new("L", (20, 20)).save(path)
    with pytest.raises(ImageError, match=r"small\.png: 20x20 = 400 pixels"):
        load_image(path, max_pixels=100)
    assert load_image(path, max_pixels=400).size == (20, 20)


# --- The early check and the float rule, shared with the server ----------------------------


def test_read_size_reads_the_header_only_and_refuses_like_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("L", (64, 48)).save(buffer, format="PNG")
    assert read_size(buffer.getvalue(), "ok.png") == (64, 48)
    with pytest.raises(TooManyPixels, match=r"^big\.png: 8000x6000"):
        read_size(png_bomb(8_000, 6_000), "big.png")
    with pytest.raises(TooManyPixels, match="too many pixels"):
        read_size(png_bomb(30_000, 30_000), "huge.png")
    with pytest.raises(ImageError, match=r"^notes\.txt: not an image") as caught:
        read_size(b"not an image at all", "notes.txt")
    assert not isinstance(caught.value, TooManyPixels)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ([[0.5, np.nan]], "NaN or infinite"),
        ([[0.5, np.inf]], "NaN or infinite"),
        ([[-0.5, 1.0]], "span [-0.5, 1]"),
        ([[0.0, 2.0]], "span [0, 2]"),
    ],
)
def test_float_pixels_must_be_finite_and_in_0_1(values: list[list[float]], problem: str) -> None:
    check_unit_range(np.array([[0.0, 1.0]]), "fine")
    with pytest.raises(ImageError, match=r"^pixels: ") as caught:
        check_unit_range(np.array(values), "pixels")
    assert problem in str(caught.value)
