"""Turn any picture into what a Fashion-MNIST model was trained on.

Fashion-MNIST was made from product photos (Zalando's README): trim the edges close to the
corner colour, resize the longest edge to 28, sharpen, extend the short edge to 28 and centre,
negate, 8-bit grayscale. `to_model_input` follows the same recipe for any picture (a photo on a
table, on paper or cloth, in uneven light; a drawing on a dark canvas, a transparent cut-out, a
16-bit scan), so the model always sees a light object on a black background, float32 in [0, 1],
shape (28, 28, 1). The recipe is five named steps, grey, background, mask, crop and fit, which
`preprocess_steps` returns one by one (for `cnnlab visualize preprocess` and the page's box);
`Finder` says how the object is found, and `benchmarks/photos.py` measured the choices.

Reading the picture safely (size limits, decompression bombs, corrupt files) is
`cnnlab.data.images`; this module is the recipe. Only NumPy, Pillow and SciPy are used (no
TensorFlow), so the light (onnxruntime) inference path runs this same module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter, ImageStat
from scipy import ndimage

from cnnlab.data.images import MAX_PIXELS, ImageSource, check_array, describe_source, load_image
from cnnlab.errors import ImageError

__all__ = [
    "BORDER_FINDER",
    "FRAMINGS",
    "MAX_KEEP_SIZE_EDGE",
    "MODEL_SIZE",
    "Box",
    "Finder",
    "PreparedImage",
    "Steps",
    "prepare_image",
    "prepare_whole_image",
    "preprocess_steps",
    "to_model_input",
]

logger = logging.getLogger(__name__)

MODEL_SIZE = (28, 28)
"""(height, width) of a Fashion-MNIST image."""
MAX_KEEP_SIZE_EDGE = 1024
"""Longest edge `prepare_whole_image` accepts: the activations of a 3x3 conv with 64 filters
over a 1024x1024 float32 image already take 256 MiB."""

_PEAK_PERCENTILE = 99.5  # the object's full brightness, ignoring a few specular pixels
_WORKING_EDGE = 1024  # larger pictures are box-reduced first: plenty for a 28-pixel result
_SHARPEN = ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0)  # Zalando: radius 1
_TRANSPARENT_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


# --- Preprocessing: named steps ----------------------------------------------------------------

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels, right and bottom exclusive."""


@dataclass(frozen=True)
class Finder:
    """How the object is told from its background; the defaults won `benchmarks/photos.py`.

    - `background`: "surface" fits a smooth (quadratic) surface to the background pixels, so a
      gradient or vignette from uneven light is subtracted; "border" takes the median of the
      outer frame as one level for the whole picture.
    - `threshold`: "spread" stands out by `SPREAD_FACTOR` times the background's own measured
      spread (its MAD, after smoothing), so noise and texture raise the bar, but never above
      where Otsu's method splits the picture's distances from the background, down to
      `TEXTURE_FLOOR` spreads: on strong texture (paper, wood grain) 4 spreads is above a faint
      garment, and the picture's own two-class split is lower; on a plain background 4 spreads
      is the lower of the two, so nothing changes there. "spread-only" is the bar without that
      cap, "otsu" is Otsu's split alone, "fixed" is 5% of full scale (Zalando's).
    - `keep`: "group" keeps the largest group of regions (regions closer than `MERGE_FRACTION`
      of the picture join a group) and drops specks, dust and separate small objects;
      "largest" keeps the largest connected region alone; "all" keeps everything that stands out.
    - `smooth`: the Gaussian sigma, in analysis pixels, applied before thresholding.
    - `straighten`: turn a tilted object upright (by up to 30 degrees) when that makes its
      box clearly smaller, as garments are photographed (and Fashion-MNIST was) upright.
    """

    background: Literal["surface", "border"] = "surface"
    threshold: Literal["spread", "spread-only", "otsu", "fixed"] = "spread"
    keep: Literal["group", "largest", "all"] = "group"
    smooth: float = 1.5
    straighten: bool = True


BORDER_FINDER = Finder(
    background="border", threshold="fixed", keep="all", smooth=0.0, straighten=False
)
"""cnnlab's method before issue 13: border median, 5% threshold, trim to everything."""

SPREAD_FACTOR = 4.0  # how many background spreads (MAD-sigmas) an object pixel stands out by
TEXTURE_FLOOR = 2.5  # on texture, Otsu's split may lower the bar to this many spreads, no lower
MERGE_FRACTION = 0.04  # regions closer than this fraction of the longest edge are one object
_ANALYSIS_EDGE = 400  # the object is found on a copy this size at most: fast, and plenty
_MIN_LEVEL = 6.0  # grey levels: the least difference that counts, even on a noiseless picture
_MIN_AREA = 0.0003  # regions under this fraction of the picture are specks
_GROUP_AREA = 0.02  # regions under this fraction of the largest do not join its group
_FIXED_THRESHOLD = 0.05 * 255  # Zalando's 5% (the "fixed" threshold and the old method)
_FIT_ROUNDS = 3
_SHARP_EDGE = 0.08  # an edge is sharp when it climbs this fraction of the object's contrast a pixel
_EDGE_REACH = 3  # analysis pixels: how far from a sharp edge the object's box may reach
_EDGE_PERCENTILE = 90  # that contrast: the object's strong parts, not its darkest seam
_MAX_TILT = 30.0  # degrees
_TILT_STEP = 2.5
_TILT_GAIN = 0.93  # straighten only when the upright box shrinks to this fraction or less
_FIT_STRIDE = 4  # the background surface is fitted on every 4th pixel each way
_MIN_SURFACE_EDGE = 48  # smaller pictures get one flat background level
_MAD_SIGMA = 1.4826  # MAD -> standard deviation of a normal distribution
FRAMINGS = (0.0, -0.015, 0.015, -0.03, 0.03)
"""How the found box is re-framed for prediction: each side moved out (positive) or in by this
fraction of the box's longest edge. A box found on a real photo is right only to a pixel or two,
and a model trained on exactly trimmed images is sensitive to that; averaging its answers over
these five framings gained 1.0 to 1.1 points on two photo sets (`benchmarks/photos.py`,
docs/predicting.md)."""


class _Framed:
    """What the model is given for one picture: `array`, or every framing of it."""

    array: NDArray[np.float32]
    framings: NDArray[np.float32] | None

    @property
    def inputs(self) -> NDArray[np.float32]:
        """Every framing's model input, (framings, height, width, 1), `array` first."""
        return self.array[np.newaxis] if self.framings is None else self.framings


@dataclass(frozen=True)
class Steps(_Framed):
    """Every step of one picture's conversion, each inspectable (`cnnlab visualize preprocess`).

    Arrays are at the working size (the picture box-reduced by `scale` so no edge exceeds
    1,024 pixels); `box` is in the original picture's pixels.
    """

    grey: NDArray[np.float32]
    """The picture in grey levels 0..255."""
    background: NDArray[np.float32]
    """The background level found under every pixel."""
    mask: NDArray[np.bool_]
    """The pixels taken as the object."""
    box: Box | None
    """The object's box in the original picture's pixels; None when nothing stood out."""
    crop: NDArray[np.float32] | None
    """The box, light on black in [0, 1], before it is fitted to the model's size."""
    array: NDArray[np.float32]
    """The model input, shape (height, width, 1), float32 in [0, 1]."""
    scale: int
    """Original pixels per working pixel."""
    object_is_dark: bool
    """True when the object was darker than its background (and was negated)."""
    framings: NDArray[np.float32] | None = None
    """The model input for each of `FRAMINGS`, shape (framings, height, width, 1), `array`
    first; None where there is only `array` (a blank or model-sized picture)."""


@dataclass(frozen=True)
class PreparedImage(_Framed):
    """Model input for one picture; `blank` means nothing stood out, so `array` is all zeros.

    `box` is where the object was found, (left, top, right, bottom) in the original picture's
    pixels; None for a blank picture or a model-ready array. `inputs` is what a predictor
    averages over: the found box and its re-framings (`FRAMINGS`).
    """

    array: NDArray[np.float32]
    blank: bool
    source: str
    box: Box | None = None
    framings: NDArray[np.float32] | None = None


def to_model_input(image: ImageSource, size: tuple[int, int] = MODEL_SIZE) -> NDArray[np.float32]:
    """Turn any picture into a Fashion-MNIST-like float32 array of shape (*size, 1) in [0, 1].

    `image` is anything `load_image` accepts; `size` is (height, width). A numpy array whose
    shape is already `size` or (*size, 1) is taken as model-ready and only cast (uint8 divided
    by 255), so Fashion-MNIST rows pass through unchanged. A blank picture gives zeros; use
    `prepare_image` to be told.
    """
    return prepare_image(image, size).array


def prepare_image(
    image: ImageSource,
    size: tuple[int, int] = MODEL_SIZE,
    finder: Finder = Finder(),
    *,
    name: str | None = None,
) -> PreparedImage:
    """Like `to_model_input`, also saying whether anything stood out, and where (`box`), with
    every framing of the found box (`inputs`). `name` is how errors and the result call the
    picture (default: `cnnlab.data.images.describe_source`)."""
    height, width = _checked_size(size)
    name = describe_source(image) if name is None else name
    if isinstance(image, np.ndarray) and image.shape in ((height, width), (height, width, 1)):
        return _model_ready(image, name)
    steps = preprocess_steps(image, (height, width), finder, name=name)
    if steps.box is None:
        logger.debug("%s: nothing stands out from the background", name)
    return PreparedImage(steps.array, steps.box is None, name, steps.box, steps.framings)


def preprocess_steps(
    image: ImageSource,
    size: tuple[int, int] = MODEL_SIZE,
    finder: Finder = Finder(),
    *,
    name: str | None = None,
) -> Steps:
    """Run every step (grey, background, mask, crop, fit) on one picture and keep each result.

    The steps: **grey** (EXIF-upright, transparency composited, one channel in 0..255);
    **background** (the level of the background under every pixel, see `Finder`); **mask**
    (the pixels that stand out from it, cleaned of specks, as one object); **crop** (the
    object's box, negated if it is darker than the background, background at 0, its brightest
    at 1); **fit** (the longest edge resized to the model's size, sharpened, centred).
    """
    height, width = _checked_size(size)
    name = describe_source(image) if name is None else name
    picture = load_image(image, name=name)
    grey, scale = _grey_step(picture, name, max(_WORKING_EDGE, 4 * height, 4 * width))
    if grey.shape == (height, width):  # already the model's size: nothing to crop or resize
        return _model_sized(grey)
    found = _find_object(grey, finder)
    if found.box is None:
        blank = np.zeros((height, width, 1), np.float32)
        return Steps(grey, found.background, found.mask, None, None, blank, scale, False)
    left, top, right, bottom = found.box
    crop = found.crop
    box = (
        left * scale,
        top * scale,
        min(right * scale, picture.width),
        min(bottom * scale, picture.height),
    )
    framings = np.stack([_fit(framed, (height, width)) for framed in found.framings])
    return Steps(
        grey, found.background, found.mask, box, crop, framings[0], scale, found.dark, framings
    )


def _model_sized(grey: NDArray[np.float32]) -> Steps:
    """A picture already at the model's size, taken whole as the data was: light on dark.

    Cropping and resizing it again could only blur it; a dark-on-light one (its frame lighter
    than mid-grey) is negated. A flat picture is blank.
    """
    dark = float(np.median(grey[_frame(grey.shape)])) > 127.5
    levels = (255 - grey if dark else grey) / np.float32(255)
    background = np.full(grey.shape, 255.0 if dark else 0.0, np.float32)
    if float(grey.max()) == float(grey.min()):
        blank = np.zeros((*grey.shape, 1), np.float32)
        return Steps(grey, background, np.zeros(grey.shape, bool), None, None, blank, 1, dark)
    box = (0, 0, grey.shape[1], grey.shape[0])
    mask = np.ones(grey.shape, bool)
    return Steps(grey, background, mask, box, levels, levels[:, :, np.newaxis], 1, dark)


def prepare_whole_image(
    image: ImageSource,
    min_size: tuple[int, int] = MODEL_SIZE,
    max_edge: int = MAX_KEEP_SIZE_EDGE,
    *,
    name: str | None = None,
) -> PreparedImage:
    """The whole picture at its own size, for a fully convolutional model (shape (H, W, 1)).

    The same conversion as `prepare_image` (grey, background, mask: a dark object negated so
    it is light on black, levels stretched) without the cropping, resizing and centring: the
    model sees every pixel where it is. A 2-D or (H, W, 1) array is taken as model-ready and
    only cast. Pictures smaller than `min_size` or with an edge over `max_edge` are refused
    with an `ImageError` saying so (nothing is resized: that is the point). `name`: as in
    `prepare_image`.
    """
    name = describe_source(image) if name is None else name
    if isinstance(image, np.ndarray) and (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    ):
        check_whole_size(image.shape[0], image.shape[1], name, min_size, max_edge)
        return _model_ready(image, name)

    picture = load_image(image, name=name)
    check_whole_size(picture.height, picture.width, name, min_size, max_edge)
    grey, _ = _grey_step(picture, name, max_edge)  # within max_edge already: not reduced
    found = _find_object(grey, Finder(keep="all"))
    if found.box is None:
        return PreparedImage(np.zeros((*grey.shape, 1), np.float32), True, name)
    return PreparedImage(found.levels[:, :, np.newaxis], False, name, found.box)


def _model_ready(image: np.ndarray, name: str) -> PreparedImage:
    """A one-channel array taken as it is: checked, cast to float32, uint8 scaled to [0, 1]."""
    check_array(image, name, MAX_PIXELS)
    ready = image.astype(np.float32).reshape(image.shape[0], image.shape[1], 1)
    if image.dtype.kind in "ui":
        ready /= 255
    return PreparedImage(ready, bool(ready.min() == ready.max()), name)


def check_whole_size(
    height: int, width: int, name: str, min_size: tuple[int, int], max_edge: int
) -> None:
    """ImageError unless a picture kept at its own size is between `min_size` and `max_edge`."""
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


def _checked_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(edge) for edge in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive integers (height, width), got {size}")
    return height, width


# --- Step 1: grey ----------------------------------------------------------------------------


def _grey_step(picture: Image.Image, name: str, max_edge: int) -> tuple[NDArray[np.float32], int]:
    """Intensities as float32 in 0..255, box-reduced by the returned factor to fit `max_edge`."""
    try:
        grey = _flatten(picture)
    except ValueError as exc:  # a mode Pillow cannot convert
        raise ImageError(f"{name}: cannot convert mode {picture.mode} to grayscale") from exc
    factor = -(-max(grey.size) // max_edge)
    if factor > 1:
        grey = grey.reduce(factor)
    return np.asarray(grey, dtype=np.float32), max(factor, 1)


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

    Either way the object then stands out from its backdrop; the mask step makes it light.
    """
    rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
    gray = rgba.convert("L")
    opaque = rgba.getchannel("A").point(lambda alpha: 255 if alpha >= 128 else 0)
    visible = ImageStat.Stat(gray, mask=opaque)
    light = visible.count[0] > 0 and visible.mean[0] > 127
    backdrop = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light else (255, 255, 255, 255))
    return Image.alpha_composite(backdrop, rgba).convert("L")


# --- Steps 2 and 3: background and mask --------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    background: NDArray[np.float32]
    mask: NDArray[np.bool_]
    box: Box | None  # at the working size
    levels: NDArray[np.float32]  # the object light on black in [0, 1], the whole frame
    crop: NDArray[np.float32]  # the object's box of `levels` (turned upright if it was tilted)
    dark: bool
    framings: tuple[NDArray[np.float32], ...] = ()  # `crop`, then its re-framings (FRAMINGS)


def _find_object(grey: NDArray[np.float32], finder: Finder) -> _Found:
    """Find the object on `grey` (working size); the search runs on a copy of at most 400 px."""
    factor = -(-max(grey.shape) // _ANALYSIS_EDGE)
    small = np.asarray(Image.fromarray(grey, "F").reduce(factor)) if factor > 1 else grey
    smooth = ndimage.gaussian_filter(small, finder.smooth) if finder.smooth else small

    if finder.background == "surface" and min(small.shape) >= _MIN_SURFACE_EDGE:
        surface, inliers = _fit_surface(small, smooth)
    else:
        frame = _frame(small.shape)
        surface = _Surface(np.array([float(np.median(small[frame]))]))
        inliers = frame
    difference = smooth - surface.at(small.shape)
    spread = _MAD_SIGMA * _mad(difference[inliers])
    distance = np.abs(difference)
    threshold = _threshold(finder, distance, spread)
    mask = _keep(distance > threshold, finder.keep)
    background = surface.at(grey.shape)
    if not mask.any():
        nothing = np.zeros_like(grey)
        return _Found(background, np.zeros(grey.shape, bool), None, nothing, nothing, False)

    dark = float(difference[mask].mean()) < 0
    signed = (background - grey) if dark else (grey - background)
    full_mask = _upsample(mask, factor, grey.shape)
    # Smoothing spreads an edge outwards; the box is where the unsmoothed pixels stand out.
    core = mask & (np.abs(small - surface.at(small.shape)) > threshold)
    if finder.keep != "all":
        contrast = float(np.percentile(distance[mask], _EDGE_PERCENTILE))
        core = _near_sharp_edges(core, small, mask, contrast)
    full_core = _upsample(core, factor, grey.shape) if core.any() else full_mask
    box = _bounds(full_core)
    if finder.keep == "all":  # the old way: the whole frame, its noise clipped below a floor
        raw = np.abs(small - surface.at(small.shape))[_frame(small.shape)]
        floor = min(float(np.percentile(raw, 95)), threshold)
        shown = np.ones_like(full_mask)
    else:  # only the object: the background inside its box goes to 0 too, by the mask
        floor = 0.0  # (no noise floor: it would erase the faint parts of a garment)
        shown = _upsample(ndimage.binary_dilation(mask, iterations=2), factor, grey.shape)
    peak = float(np.percentile(signed[full_mask], _PEAK_PERCENTILE))
    levels = np.clip((signed - floor) / max(peak - floor, 1.0), 0.0, 1.0) * shown
    levels = levels.astype(np.float32)
    angle = _tilt(core) if finder.straighten and finder.keep != "all" else 0.0
    upright, upright_box = _straightened(levels, full_core, box, angle) if angle else (levels, box)
    framings = tuple(_reframed(upright, upright_box, fraction) for fraction in FRAMINGS)
    return _Found(background, full_mask, box, levels, framings[0], dark, framings)


def _reframed(levels: NDArray[np.float32], box: Box, fraction: float) -> NDArray[np.float32]:
    """`levels` cropped to `box` with each side moved out by `fraction` of its longest edge
    (in, when negative), staying inside the picture and at least a pixel wide."""
    left, top, right, bottom = box
    step = round(fraction * max(right - left, bottom - top))
    step = max(step, -((min(right - left, bottom - top) - 1) // 2))
    height, width = levels.shape
    return levels[
        max(top - step, 0) : min(bottom + step, height),
        max(left - step, 0) : min(right + step, width),
    ]


def _near_sharp_edges(
    core: NDArray[np.bool_], small: NDArray[np.float32], mask: NDArray[np.bool_], contrast: float
) -> NDArray[np.bool_]:
    """The object's pixels near a sharp edge: a soft shadow beside it has none and drops out.

    An edge is sharp when it climbs `_SHARP_EDGE` of `contrast` per pixel, the object's own
    contrast with its background (the 90th percentile of its distance from it). Judged against
    its extreme instead (the 99.5th percentile), a light garment's one dark seam or print set
    the bar, its own faint outline never reached it, and the box shrank to the seam's
    surroundings: narrower than the garment's own mask (issue 27).
    """
    gradient = ndimage.gaussian_gradient_magnitude(small, 1.0)
    sharp = (gradient > _SHARP_EDGE * contrast) & ndimage.binary_dilation(mask, iterations=2)
    if not sharp.any():
        return core
    near = core & ndimage.binary_dilation(sharp, iterations=_EDGE_REACH)
    return near if near.any() else core


def _bounds(mask: NDArray[np.bool_]) -> Box:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _tilt(core: NDArray[np.bool_]) -> float:
    """How far (degrees) the object is turned from its smallest upright box; 0 if barely."""
    ys, xs = np.nonzero(core)
    if len(xs) < 20:
        return 0.0
    angles = np.radians(np.arange(-_MAX_TILT, _MAX_TILT + 0.1, _TILT_STEP))
    cos, sin = np.cos(angles)[:, np.newaxis], np.sin(angles)[:, np.newaxis]
    turned_x = xs * cos - ys * sin
    turned_y = xs * sin + ys * cos
    areas = np.ptp(turned_x, axis=1) * np.ptp(turned_y, axis=1)
    best = int(areas.argmin())
    upright = int(np.argmin(np.abs(angles)))
    if areas[best] > _TILT_GAIN * areas[upright]:
        return 0.0
    return float(np.degrees(angles[best]))


def _straightened(
    levels: NDArray[np.float32], core: NDArray[np.bool_], box: Box, angle: float
) -> tuple[NDArray[np.float32], Box]:
    """The object's surroundings turned upright by `angle` degrees, and its box in them."""
    left, top, right, bottom = box
    margin = max(right - left, bottom - top) // 2
    region = np.s_[max(top - margin, 0) : bottom + margin, max(left - margin, 0) : right + margin]
    turned = ndimage.rotate(levels[region], -angle, reshape=True, order=1)
    turned_core = ndimage.rotate(core[region].astype(np.float32), -angle, reshape=True, order=1)
    inside = turned_core > 0.5
    if not inside.any():
        return levels, box
    return np.clip(turned, 0.0, 1.0).astype(np.float32), _bounds(inside)


@dataclass(frozen=True)
class _Surface:
    """A background level as a polynomial in x and y (1 term: flat; 6 terms: quadratic)."""

    coefficients: NDArray[np.float64]
    low: float = -np.inf
    high: float = np.inf

    def at(self, shape: tuple[int, ...]) -> NDArray[np.float32]:
        """The level at every pixel of a picture of `shape` (coordinates relative to its size)."""
        c = self.coefficients
        if len(c) == 1:
            return np.full(shape, c[0], np.float32)
        y = ((np.arange(shape[0]) + 0.5) / shape[0] - 0.5)[:, np.newaxis]
        x = ((np.arange(shape[1]) + 0.5) / shape[1] - 0.5)[np.newaxis, :]
        level = c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y
        return np.clip(level, self.low, self.high).astype(np.float32)


def _fit_surface(
    grey: NDArray[np.float32], smooth: NDArray[np.float32]
) -> tuple[_Surface, NDArray[np.bool_]]:
    """A quadratic fitted to the background pixels, found by a few rounds of rejection.

    It starts from the outer frame's median; each round refits on the pixels whose smoothed
    value lies within 3 spreads of the last surface, so the object (far from it) drops out.

    The faint parts of an object are within that band too, all on one side of the background,
    so each round pulls the fit towards them and lets more of them in: a large, light garment
    on white (issue 27) dragged the fit into a bowl 6 levels deep under its body, which then
    no longer stood out, and the box was a strip beside one seam. Two rules of light stop the
    walk: uneven light is a slope or a dome (brightest where it falls, darker towards the
    edges: a vignette, a lamp, a flash), never a bowl, so upward curvature is taken out
    (`_no_bowl`); and the outer frame is background, so each fit is moved up or down until
    the frame's background pixels sit on it (their median residual is 0).
    """
    frame = _frame(grey.shape)
    level = float(np.median(grey[frame]))
    spread = _MAD_SIGMA * _mad(smooth[frame] - level)
    inliers = np.abs(smooth - level) <= max(3 * spread, _MIN_LEVEL)
    y = ((np.arange(grey.shape[0]) + 0.5) / grey.shape[0] - 0.5)[:, np.newaxis]
    x = ((np.arange(grey.shape[1]) + 0.5) / grey.shape[1] - 0.5)[np.newaxis, :]
    terms = [np.ones_like(grey), x, y, x * x, x * y, y * y]
    sample = np.s_[::_FIT_STRIDE, ::_FIT_STRIDE]
    design = np.stack([np.broadcast_to(t, grey.shape)[sample].ravel() for t in terms], axis=1)
    values_sampled = grey[sample].ravel()
    surface = _Surface(np.array([level]))
    for _ in range(_FIT_ROUNDS):
        if inliers.mean() < 0.1:  # too little background seen to fit a shape: keep it flat
            break
        chosen = inliers[sample].ravel()
        used = design[chosen]  # least squares by its 6x6 normal equations: cheap and enough
        coefficients, *_ = np.linalg.lstsq(
            used.T @ used, used.T @ values_sampled[chosen], rcond=None
        )
        coefficients = _no_bowl(coefficients, used, values_sampled[chosen])
        on_frame = frame & inliers
        if on_frame.any():
            level_there = _Surface(coefficients).at(grey.shape)[on_frame]
            coefficients[0] += float(np.median(grey[on_frame] - level_there))
        values = smooth[inliers]
        surface = _Surface(coefficients, float(values.min()), float(values.max()))
        residual = smooth - surface.at(grey.shape)
        spread = _MAD_SIGMA * _mad(residual[inliers])
        inliers = np.abs(residual) <= max(3 * spread, _MIN_LEVEL)
    return surface, inliers


def _no_bowl(
    coefficients: NDArray[np.float64], design: NDArray[np.float64], values: NDArray[np.float32]
) -> NDArray[np.float64]:
    """The quadratic with its upward curvature (a bowl, in any direction) taken out.

    The curvature (the Hessian of the quadratic) keeps its downward part; the constant and
    the slopes are refitted under it by least squares on the same pixels (`design`, `values`).
    """
    c3, c4, c5 = coefficients[3:]
    curvatures, axes = np.linalg.eigh(np.array([[2 * c3, c4], [c4, 2 * c5]]))
    if curvatures.max() <= 0:
        return coefficients
    dome = (axes * np.minimum(curvatures, 0)) @ axes.T
    quadratic = np.array([dome[0, 0] / 2, dome[0, 1], dome[1, 1] / 2])
    plane, *_ = np.linalg.lstsq(design[:, :3], values - design[:, 3:] @ quadratic, rcond=None)
    return np.concatenate([plane, quadratic])


def _threshold(finder: Finder, distance: NDArray[np.float32], spread: float) -> float:
    """How far from the background a pixel must be to count as object."""
    if finder.threshold == "fixed":
        return _FIXED_THRESHOLD
    if finder.threshold == "otsu":
        return max(_otsu(distance), _MIN_LEVEL)
    level = SPREAD_FACTOR * spread
    if finder.threshold == "spread":
        level = min(level, max(_otsu(distance), TEXTURE_FLOOR * spread))
    return max(level, _MIN_LEVEL)


def _keep(stands_out: NDArray[np.bool_], keep: str) -> NDArray[np.bool_]:
    """The object among the pixels that stand out: specks dropped, the main group kept."""
    if keep == "all":  # the old rule: isolated pixels (JPEG noise, dust) do not count
        neighbours = ndimage.uniform_filter(stands_out.astype(np.float32), 3, mode="constant")
        return stands_out & (neighbours * 9 >= 2 - 1e-3)
    closed = ndimage.binary_erosion(
        ndimage.binary_dilation(stands_out, iterations=1), iterations=1, border_value=1
    )
    labels, count = ndimage.label(closed)
    if count == 0:
        return closed
    areas = np.bincount(labels.ravel())[1:]
    largest = int(areas.argmax())
    if keep == "largest":
        return np.asarray(ndimage.binary_fill_holes(labels == largest + 1), bool)
    big = areas >= max(_MIN_AREA * stands_out.size, _GROUP_AREA * areas[largest])
    kept = np.concatenate([[False], big])[labels]
    reach = max(1, round(MERGE_FRACTION * max(stands_out.shape) / 2))
    groups, _ = ndimage.label(ndimage.binary_dilation(kept, iterations=reach))
    group_areas = np.bincount(groups.ravel(), weights=kept.ravel())
    group_areas[0] = 0
    chosen = kept & (groups == int(group_areas.argmax()))
    return np.asarray(ndimage.binary_fill_holes(chosen), bool)


def _otsu(values: NDArray[np.float32]) -> float:
    """Otsu's threshold: the level that best splits `values` into two classes."""
    counts, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(between.argmax())])


def _frame(shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """The outer frame: 3% of the shorter edge wide, at least one pixel."""
    width = max(1, min(shape) * 3 // 100) if min(shape) > 4 else 1
    frame = np.ones(shape[:2], bool)
    frame[width:-width, width:-width] = False
    return frame


def _mad(values: NDArray[np.float32]) -> float:
    """Median absolute deviation from the median."""
    if not values.size:
        return 0.0
    return float(np.median(np.abs(values - np.median(values))))


def _upsample(mask: NDArray[np.bool_], factor: int, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """A mask from the analysis copy at the working size."""
    if factor == 1:
        return mask
    big = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    padded = np.pad(
        big,
        ((0, max(0, shape[0] - big.shape[0])), (0, max(0, shape[1] - big.shape[1]))),
        mode="edge",
    )
    return padded[: shape[0], : shape[1]]


# --- Steps 4 and 5: crop and fit ---------------------------------------------------------------


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
