"""Reading a picture safely: any source in, an upright Pillow image out, or one clear error.

The bytes may come from anyone (`cnnlab serve`), so decoding is guarded: the file's size is
checked before it is read, the declared pixel count before any pixel is decoded
(`check_pixels`, the one decompression-bomb guard), and every decoder failure becomes an
`ImageError` that names the source (`TooManyPixels` for the guard). The server's early check,
`read_size`, opens the header only, with these same errors. What a picture then
becomes for a model (the photo recipe) is `cnnlab.prediction.preprocess`'s business.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import ImageError

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "ImageSource",
    "TooManyPixels",
    "check_array",
    "check_pixels",
    "check_unit_range",
    "describe_source",
    "load_image",
    "one_line",
    "read_size",
]

logger = logging.getLogger(__name__)

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | BinaryIO | Image.Image | np.ndarray
"""What `load_image` accepts: a path, encoded bytes, a binary file, a PIL image or an array."""

MAX_PIXELS = 40_000_000
"""Largest width * height that is decoded: a guard against decompression bombs."""
MAX_FILE_BYTES = 50 * 1024 * 1024
"""Largest encoded image that is read into memory."""

_DECODING = threading.Lock()
"""Held while Pillow opens and decodes: the decompression-bomb guard uses
`warnings.catch_warnings`, which swaps the process-wide warning filters and is not thread-safe.
Only the decoding is serialised, so threads (the server's requests) find objects in parallel."""


class TooManyPixels(ImageError):
    """The picture declares more pixels than may be decoded (a decompression-bomb guard)."""


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    max_file_bytes: int = MAX_FILE_BYTES,
    name: str | None = None,
) -> Image.Image:
    """Decode `source` into an upright Pillow image, or raise `ImageError` saying what is wrong.

    `source` is a path, raw bytes, a binary file object, a Pillow image, or a numpy array of
    shape (H, W) or (H, W, 1|3|4) holding uint8 values or floats in [0, 1]. The declared size
    is checked against `max_pixels` before decoding (Pillow's own `Image.MAX_IMAGE_PIXELS` also
    applies). An animation gives its first frame, the only one decoded, so its frame count costs
    nothing. EXIF orientation is applied. `name` is how errors call it (default: its
    `describe_source`, passed in by a caller that already knows it).
    """
    name = describe_source(source) if name is None else name
    if isinstance(source, np.ndarray):
        return _image_from_array(source, name, max_pixels)
    with _pillow_errors(name):
        if isinstance(source, Image.Image):
            image = source
        else:
            image = Image.open(io.BytesIO(_read_bytes(source, name, max_file_bytes)))
        check_pixels(image.width, image.height, name, max_pixels)
        image.load()  # decode now, so a truncated file fails here and not halfway through
    return _upright(image, name)


def describe_source(source: object) -> str:
    """How messages and predictions refer to `source`: the path, or the kind of object."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))}>" if source.ndim else "<array>"
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", None)  # set when Pillow opened it from a file
    else:
        name = getattr(source, "name", None)  # set on open() file objects
    return name if isinstance(name, str) and name else f"<{type(source).__name__}>"


def _read_bytes(source: object, name: str, max_file_bytes: int) -> bytes:
    """The encoded image: at most `max_file_bytes`, never empty."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = _read_file(Path(os.fsdecode(source)), name, max_file_bytes)
    elif hasattr(source, "read"):
        try:
            data = source.read(max_file_bytes + 1)
        except (OSError, ValueError) as exc:
            raise ImageError(f"{name}: cannot read the file object ({one_line(exc)})") from exc
        if not isinstance(data, bytes):
            raise ImageError(f"{name}: the file object gives text; open it in binary mode ('rb')")
    else:
        raise ImageError(
            f"{name}: not an image source; pass a path, bytes, a binary file, "
            "a PIL image or a numpy array"
        )
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes); pass a non-empty image file")
    if len(data) > max_file_bytes:
        raise _too_large(name, max_file_bytes)
    return data


def _read_file(path: Path, name: str, max_file_bytes: int) -> bytes:
    """Read a regular file, refusing directories and oversized files before reading them."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{name}: is a directory, not an image file; pass an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{name}: not a regular file; pass an image file")
        if info.st_size > max_file_bytes:
            raise _too_large(name, max_file_bytes)
        with path.open("rb") as handle:
            return handle.read(max_file_bytes + 1)
    except FileNotFoundError as exc:
        raise ImageError(f"{name}: no such file; check the path") from exc
    except (OSError, ValueError) as exc:  # permissions, a file as a folder, a NUL in the name
        raise ImageError(f"{name}: cannot read the file ({one_line(exc)})") from exc


def _too_large(name: str, max_file_bytes: int) -> ImageError:
    return ImageError(
        f"{name}: the file is over the {max_file_bytes:,}-byte limit; "
        "recompress or downscale it, or raise max_file_bytes"
    )


def read_size(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The (width, height) encoded `data` declares, reading its header only, nothing decoded.

    `TooManyPixels` over `max_pixels`, `ImageError` for what is not an image: the server's
    early check, with the same errors as decoding."""
    with _pillow_errors(name), Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    check_pixels(width, height, name, max_pixels)
    return width, height


def check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    """`TooManyPixels` if a `width` x `height` picture is over `max_pixels`."""
    if width * height > max_pixels:
        raise TooManyPixels(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,} (a decompression-bomb guard); downscale it or raise max_pixels"
        )


@contextlib.contextmanager
def _pillow_errors(name: str) -> Iterator[None]:
    """Turn whatever Pillow raises while opening or decoding into one `ImageError`."""
    with _DECODING, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TooManyPixels(
                f"{name}: too many pixels to decode safely ({one_line(exc)}); downscale it"
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(
                f"{name}: not an image Pillow can read; use PNG, JPEG, GIF, WebP, BMP or TIFF"
            ) from exc
        except MemoryError as exc:
            raise ImageError(f"{name}: not enough memory to decode it; downscale it") from exc
        except Exception as exc:  # decoders fed untrusted bytes fail in many ways; none escapes
            raise ImageError(
                f"{name}: truncated or corrupt image ({one_line(exc)}); re-export or re-download it"
            ) from exc


def _upright(image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation, as a photo viewer would; broken EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # unreadable metadata should not cost the picture
        logger.warning("%s: ignoring unreadable EXIF orientation", name)
        return image


def _image_from_array(array: np.ndarray, name: str, max_pixels: int) -> Image.Image:
    check_array(array, name, max_pixels)
    if array.dtype.kind in "fb":
        array = np.round(array.astype(np.float32) * 255)
    pixels = array.astype(np.uint8)
    return Image.fromarray(pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)


def check_array(array: np.ndarray, name: str, max_pixels: int) -> None:
    """Refuse arrays that are not an image: wrong shape, dtype or value range."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(
            f"{name}: shape {array.shape} is not an image; expected (H, W) or (H, W, C) "
            "with C = 1, 3 or 4"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"{name}: shape {array.shape} has no pixels")
    check_pixels(width, height, name, max_pixels)
    kind = array.dtype.kind
    if kind == "f":
        check_unit_range(array, name)
    elif kind in "ui":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"{name}: integer values span {low}..{high}, expected 0..255; "
                "scale them or pass floats in [0, 1]"
            )
    elif kind != "b":
        raise ImageError(f"{name}: dtype {array.dtype} is not an image; use uint8 or float")


def check_unit_range(values: np.ndarray, name: str) -> None:
    """Refuse float pixels that are not all finite and in [0, 1] (`ImageError` naming `name`)."""
    if not np.isfinite(values).all():
        raise ImageError(f"{name}: contains NaN or infinite values; replace them first")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise ImageError(
            f"{name}: float values span [{low:g}, {high:g}], expected [0, 1]; "
            "divide 0..255 data by 255"
        )


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
