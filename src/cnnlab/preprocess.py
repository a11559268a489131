"""Turn any picture into what a Fashion-MNIST model was trained on.

Fashion-MNIST was made from product photos (Zalando's README): trim the edges close to the
corner colour, resize the longest edge to 28, sharpen, extend the short edge to 28 and centre,
negate, 8-bit grayscale. `to_model_input` follows the same recipe for any picture (a photo on a
white or grey background, a drawing on a dark canvas, a transparent cut-out, a 16-bit scan), so
the model always sees a light object on a black background, float32 in [0, 1], shape (28, 28, 1).

The bytes may come from anyone (`cnnlab serve`), so decoding is guarded: the declared size is
checked before any pixel is decoded and every decoder failure becomes an `ImageError`.
Only numpy and Pillow are used, so a light (onnxruntime) inference path can reuse this module.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter, ImageOps, ImageStat, UnidentifiedImageError

from cnnlab.errors import ImageError

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_KEEP_SIZE_EDGE",
    "MAX_PIXELS",
    "MODEL_SIZE",
    "ImageSource",
    "PreparedImage",
    "describe_source",
    "load_image",
    "prepare_image",
    "prepare_whole_image",
    "preprocess_many",
    "to_model_input",
]

logger = logging.getLogger(__name__)

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | BinaryIO | Image.Image | np.ndarray
"""What `load_image` accepts: a path, encoded bytes, a binary file, a PIL image or an array."""

MAX_PIXELS = 40_000_000
"""Largest width * height that is decoded: a guard against decompression bombs."""
MAX_FILE_BYTES = 50 * 1024 * 1024
"""Largest encoded image that is read into memory."""
MODEL_SIZE = (28, 28)
"""(height, width) of a Fashion-MNIST image."""
MAX_KEEP_SIZE_EDGE = 1024
"""Longest edge `prepare_whole_image` accepts: the activations of a 3x3 conv with 64 filters
over a 1024x1024 float32 image already take 256 MiB."""

_BORDER = 2  # width of the frame the background level is read from
_THRESHOLD = 0.05 * 255  # distance from the background that makes a pixel object (Zalando: 5%)
_PEAK_PERCENTILE = 99.5  # the object's full brightness, ignoring a few specular pixels
_WORKING_EDGE = 1024  # larger pictures are box-reduced first: plenty for a 28-pixel result
_SHARPEN = ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0)  # Zalando: radius 1
_TRANSPARENT_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class PreparedImage:
    """Model input for one picture; `blank` means nothing stood out, so `array` is all zeros."""

    array: NDArray[np.float32]
    blank: bool
    source: str


# --- Loading -------------------------------------------------------------------------------


def load_image(
    source: ImageSource, *, max_pixels: int = MAX_PIXELS, max_file_bytes: int = MAX_FILE_BYTES
) -> Image.Image:
    """Decode `source` into an upright Pillow image, or raise `ImageError` saying what is wrong.

    `source` is a path, raw bytes, a binary file object, a Pillow image, or a numpy array of
    shape (H, W) or (H, W, 1|3|4) holding uint8 values or floats in [0, 1]. The declared size
    is checked against `max_pixels` before decoding (Pillow's own `Image.MAX_IMAGE_PIXELS` also
    applies). An animation gives its first frame, the only one decoded, so its frame count costs
    nothing. EXIF orientation is applied.
    """
    name = describe_source(source)
    if isinstance(source, np.ndarray):
        return _image_from_array(source, name, max_pixels)
    with _pillow_errors(name):
        if isinstance(source, Image.Image):
            image = source
        else:
            image = Image.open(io.BytesIO(_read_bytes(source, name, max_file_bytes)))
        _check_pixels(image.width, image.height, name, max_pixels)
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
            raise ImageError(f"{name}: cannot read the file object ({_one_line(exc)})") from exc
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
        raise ImageError(f"{name}: cannot read the file ({_one_line(exc)})") from exc


def _too_large(name: str, max_file_bytes: int) -> ImageError:
    return ImageError(
        f"{name}: the file is over the {max_file_bytes:,}-byte limit; "
        "recompress or downscale it, or raise max_file_bytes"
    )


def _check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,} (a decompression-bomb guard); downscale it or raise max_pixels"
        )


@contextlib.contextmanager
def _pillow_errors(name: str) -> Iterator[None]:
    """Turn whatever Pillow raises while opening or decoding into one `ImageError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"{name}: too many pixels to decode safely ({_one_line(exc)}); downscale it"
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(
                f"{name}: not an image Pillow can read; use PNG, JPEG, GIF, WebP, BMP or TIFF"
            ) from exc
        except MemoryError as exc:
            raise ImageError(f"{name}: not enough memory to decode it; downscale it") from exc
        except Exception as exc:  # decoders fed untrusted bytes fail in many ways; none escapes
            raise ImageError(
                f"{name}: truncated or corrupt image ({_one_line(exc)}); "
                "re-export or re-download it"
            ) from exc


def _upright(image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation, as a photo viewer would; broken EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # unreadable metadata should not cost the picture
        logger.warning("%s: ignoring unreadable EXIF orientation", name)
        return image


def _image_from_array(array: np.ndarray, name: str, max_pixels: int) -> Image.Image:
    _check_array(array, name, max_pixels)
    if array.dtype.kind in "fb":
        array = np.round(array.astype(np.float32) * 255)
    pixels = array.astype(np.uint8)
    return Image.fromarray(pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)


def _check_array(array: np.ndarray, name: str, max_pixels: int) -> None:
    """Refuse arrays that are not an image: wrong shape, dtype or value range."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(
            f"{name}: shape {array.shape} is not an image; expected (H, W) or (H, W, C) "
            "with C = 1, 3 or 4"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"{name}: shape {array.shape} has no pixels")
    _check_pixels(width, height, name, max_pixels)
    kind = array.dtype.kind
    if kind == "f":
        if not np.isfinite(array).all():
            raise ImageError(f"{name}: contains NaN or infinite values; replace them first")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ImageError(
                f"{name}: float values span [{low:g}, {high:g}], expected [0, 1]; "
                "divide 0..255 data by 255"
            )
    elif kind in "ui":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"{name}: integer values span {low}..{high}, expected 0..255; "
                "scale them or pass floats in [0, 1]"
            )
    elif kind != "b":
        raise ImageError(f"{name}: dtype {array.dtype} is not an image; use uint8 or float")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- Preprocessing -------------------------------------------------------------------------


def to_model_input(image: ImageSource, size: tuple[int, int] = MODEL_SIZE) -> NDArray[np.float32]:
    """Turn any picture into a Fashion-MNIST-like float32 array of shape (*size, 1) in [0, 1].

    `image` is anything `load_image` accepts; `size` is (height, width). A numpy array whose
    shape is already `size` or (*size, 1) is taken as model-ready and only cast (uint8 divided
    by 255), so Fashion-MNIST rows pass through unchanged. A blank picture gives zeros; use
    `prepare_image` to be told.
    """
    return prepare_image(image, size).array


def prepare_image(image: ImageSource, size: tuple[int, int] = MODEL_SIZE) -> PreparedImage:
    """Like `to_model_input`, also saying whether anything stood out from the background."""
    height, width = _checked_size(size)
    name = describe_source(image)
    if isinstance(image, np.ndarray) and image.shape in ((height, width), (height, width, 1)):
        return _model_ready(image, name)

    picture = load_image(image)
    try:
        gray = _grayscale(picture, max(_WORKING_EDGE, 4 * height, 4 * width))
    except ValueError as exc:  # a mode Pillow cannot convert
        raise ImageError(f"{name}: cannot convert mode {picture.mode} to grayscale") from exc
    levels = _object_levels(gray)
    if levels is None:
        logger.debug("%s: nothing stands out from the background", name)
        return PreparedImage(np.zeros((height, width, 1), np.float32), True, name)
    return PreparedImage(_fit(levels, (height, width)), False, name)


def prepare_whole_image(
    image: ImageSource,
    min_size: tuple[int, int] = MODEL_SIZE,
    max_edge: int = MAX_KEEP_SIZE_EDGE,
) -> PreparedImage:
    """The whole picture at its own size, for a fully convolutional model (shape (H, W, 1)).

    The same conversion as `prepare_image` (grayscale, background to 0, a dark object negated so
    it is light on black, levels stretched) without the trimming, resizing and centring: the
    model sees every pixel where it is. A 2-D or (H, W, 1) array is taken as model-ready and
    only cast. Pictures smaller than `min_size` or with an edge over `max_edge` are refused
    with an `ImageError` saying so (nothing is resized: that is the point).
    """
    name = describe_source(image)
    if isinstance(image, np.ndarray) and (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    ):
        _check_whole_size(image.shape[0], image.shape[1], name, min_size, max_edge)
        return _model_ready(image, name)

    picture = load_image(image)
    _check_whole_size(picture.height, picture.width, name, min_size, max_edge)
    try:
        gray = _grayscale(picture, max_edge)  # within max_edge already: not reduced
    except ValueError as exc:  # a mode Pillow cannot convert
        raise ImageError(f"{name}: cannot convert mode {picture.mode} to grayscale") from exc
    levels = _object_levels(gray, trim=False)
    if levels is None:
        return PreparedImage(np.zeros((*gray.shape, 1), np.float32), True, name)
    return PreparedImage(levels[:, :, np.newaxis], False, name)


def _model_ready(image: np.ndarray, name: str) -> PreparedImage:
    """A one-channel array taken as it is: checked, cast to float32, uint8 scaled to [0, 1]."""
    _check_array(image, name, MAX_PIXELS)
    ready = image.astype(np.float32).reshape(image.shape[0], image.shape[1], 1)
    if image.dtype.kind in "ui":
        ready /= 255
    return PreparedImage(ready, bool(ready.min() == ready.max()), name)


def _check_whole_size(
    height: int, width: int, name: str, min_size: tuple[int, int], max_edge: int
) -> None:
    if height < min_size[0] or width < min_size[1]:
        raise ImageError(
            f"{name}: {width}x{height} pixels is smaller than the {min_size[1]}x{min_size[0]} "
            "the model needs; predict it without keeping its size"
        )
    if max(height, width) > max_edge:
        raise ImageError(
            f"{name}: {width}x{height} pixels has an edge over {max_edge}; shrink it first "
            "or predict it without keeping its size"
        )


def preprocess_many(
    sources: Iterable[ImageSource], size: tuple[int, int] = MODEL_SIZE
) -> tuple[NDArray[np.float32], list[ImageError | None]]:
    """Convert each source; a bad one gets its error in its slot instead of stopping the rest.

    Returns the good inputs stacked as (N_good, *size, 1), in order, and one entry per source:
    None where it converted, else its `ImageError`.
    """
    height, width = _checked_size(size)
    arrays: list[NDArray[np.float32]] = []
    errors: list[ImageError | None] = []
    for source in sources:
        try:
            arrays.append(to_model_input(source, (height, width)))
        except ImageError as exc:
            errors.append(exc)
        else:
            errors.append(None)
    if not arrays:
        return np.zeros((0, height, width, 1), np.float32), errors
    return np.stack(arrays), errors


def _checked_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(edge) for edge in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive integers (height, width), got {size}")
    return height, width


def _grayscale(image: Image.Image, max_edge: int) -> NDArray[np.float32]:
    """Intensities as float32 in 0..255, box-reduced so that no edge exceeds `max_edge`."""
    gray = _flatten(image)
    factor = -(-max(gray.size) // max_edge)
    if factor > 1:
        gray = gray.reduce(factor)
    return np.asarray(gray, dtype=np.float32)


def _flatten(image: Image.Image) -> Image.Image:
    """One channel ("L" or "F") in 0..255, with transparency composited away."""
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        return _composite(image)
    if image.mode.startswith("I;16"):
        return Image.fromarray(_to_255(np.asarray(image), full_scale=65535))
    if image.mode in ("I", "F"):
        return Image.fromarray(_to_255(np.asarray(image)))
    if image.mode == "LAB":
        return image.getchannel("L")
    return image.convert("L")


def _to_255(values: np.ndarray, full_scale: float | None = None) -> NDArray[np.float32]:
    """Scale 16-bit, 32-bit or float intensities to 0..255 by their range instead of clipping.

    Without `full_scale`, the smallest of 1, 255 and 65535 that holds the values is used, and
    values outside all three are stretched from their minimum to their maximum.
    """
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if full_scale is None:
        low, high = float(values.min()), float(values.max())
        full_scale = next((s for s in (1.0, 255.0, 65535.0) if low >= 0 and high <= s), None)
        if full_scale is None:
            values -= low
            full_scale = max(high - low, 1e-6)
    values *= 255 / full_scale
    return values


def _composite(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white, or onto black when the visible content is light.

    Either way the object then stands out from its backdrop; `_object_levels` makes it light.
    """
    rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
    gray = rgba.convert("L")
    opaque = rgba.getchannel("A").point(lambda alpha: 255 if alpha >= 128 else 0)
    visible = ImageStat.Stat(gray, mask=opaque)
    light = visible.count[0] > 0 and visible.mean[0] > 127
    backdrop = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light else (255, 255, 255, 255))
    return Image.alpha_composite(backdrop, rgba).convert("L")


def _object_levels(gray: NDArray[np.float32], trim: bool = True) -> NDArray[np.float32] | None:
    """The object trimmed from its background, light on black in [0, 1]; None if blank.

    With `trim=False` the whole frame is kept, levelled the same way.

    The background level is the median of the outer frame, as Zalando trimmed by the corner
    colour. A darker object (a product photo on white) is negated, as Fashion-MNIST was; a light
    one (a drawing on a dark canvas, Fashion-MNIST itself) is kept. The background's own noise
    maps to 0 and the object's brightest level to 1.
    """
    border = _border(gray)
    background = float(np.median(border))
    difference = gray - background
    foreground = _foreground(np.abs(difference))
    if not foreground.any():
        return None
    if difference[foreground].mean() < 0:
        difference = -difference
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    crop = difference[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] if trim else difference
    noise = min(float(np.percentile(np.abs(border - background), 95)), _THRESHOLD)
    peak = float(np.percentile(difference[foreground], _PEAK_PERCENTILE))
    return np.clip((crop - noise) / max(peak - noise, 1.0), 0.0, 1.0)


def _border(gray: NDArray[np.float32]) -> NDArray[np.float32]:
    """The pixels of the outer frame (two pixels wide, one for tiny images)."""
    b = _BORDER if min(gray.shape) > 2 * _BORDER else 1
    inner = gray[b:-b]
    return np.concatenate(
        [gray[:b].ravel(), gray[-b:].ravel(), inner[:, :b].ravel(), inner[:, -b:].ravel()]
    )


def _foreground(distance: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Pixels far enough from the background; isolated ones (JPEG noise, dust) do not count."""
    stands_out = distance > _THRESHOLD
    padded = np.pad(stands_out, 1).astype(np.uint8)
    height, width = stands_out.shape
    neighbourhood = np.zeros((height, width), np.uint8)  # how many of the 3x3 stand out
    for dy in range(3):
        for dx in range(3):
            neighbourhood += padded[dy : dy + height, dx : dx + width]
    return stands_out & (neighbourhood >= 2)


def _fit(levels: NDArray[np.float32], size: tuple[int, int]) -> NDArray[np.float32]:
    """Resize the longest edge to fit `size`, sharpen when shrinking, centre on black."""
    height, width = size
    crop = Image.fromarray(np.round(levels * 255).astype(np.uint8))
    scale = min(height / crop.height, width / crop.width)
    new_width = min(width, max(1, round(crop.width * scale)))
    new_height = min(height, max(1, round(crop.height * scale)))
    small = crop.resize((new_width, new_height), Image.Resampling.LANCZOS)
    if scale < 1:
        small = small.filter(_SHARPEN)
    canvas = Image.new("L", (width, height))
    canvas.paste(small, ((width - new_width) // 2, (height - new_height) // 2))
    return np.asarray(canvas, dtype=np.float32)[:, :, np.newaxis] / np.float32(255)
