"""Photo-like pictures made from 28x28 garments, with the garment's place known.

A Fashion-MNIST image is a negated, background-subtracted product photo. `make_photo` runs that
backwards onto a 320x320 RGB canvas, the way a phone photo of clothing on a table looks, under
one named condition (sensor noise, JPEG artefacts, paper, fabric or wood-grain texture, uneven
light, a shadow, dust, a second object, a coloured background, a light garment on a dark
background, a garment cut by the edge, a tilted garment, low contrast), and says where the
garment is. `benchmarks/photos.py` measures the predictor on thousands of them and the tests
check the preprocessing's found box against the known one.

    photo = make_photo(garment, "shadow", 2, np.random.default_rng(0))
    photo.jpeg()                      # the encoded JPEG bytes a user would upload
    photo.box                         # (left, top, right, bottom) of the garment, in pixels

Everything is drawn from the `rng` given, so a seed makes the same pictures on every machine.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

__all__ = ["CANVAS", "CONDITIONS", "Photo", "make_photo"]

CANVAS = 320
"""Edge of the square canvas, in pixels."""
GARMENT_EDGE = (110, 170)
"""Range of the garment's drawn size: its 28x28 frame is scaled to this many pixels."""
BOX_LEVEL = 0.1
"""A canvas pixel is garment when its garment opacity exceeds this (for the known box)."""
BASE_NOISE = 3.0  # grey levels of sensor noise in every photo but the clean one
BASE_QUALITY = 88  # JPEG quality of every photo but the JPEG condition's

Box = tuple[int, int, int, int]
Float = NDArray[np.float64]

CONDITIONS: dict[str, tuple[str, ...]] = {
    "clean": ("flat grey, no noise, JPEG 95",),
    "noise": ("sigma 8", "sigma 16", "sigma 28"),
    "jpeg": ("quality 25", "quality 8"),
    "paper": ("amplitude 10", "amplitude 22"),
    "fabric": ("amplitude 12", "amplitude 26"),
    "wood": ("amplitude 16", "amplitude 32"),
    "gradient": ("30% darker across", "55% darker across"),
    "vignette": ("35% darker corners", "60% darker corners"),
    "shadow": ("25% shadow", "40% shadow"),
    "dust": ("25 specks", "80 specks"),
    "second-object": ("one 15-25 px object", "two 25-40 px objects"),
    "coloured": ("pastel", "saturated"),
    "light-garment": ("on near-black", "on dark grey"),
    "edge": ("touching an edge", "10% cut off"),
    "rotated": ("tilted 10-15°", "tilted 20-30°"),
    "low-contrast": ("contrast 60", "contrast 35"),
}
"""Each condition and what its severities (1, 2, ...) mean."""

_COLOURS = np.array([[90, 140, 205], [205, 80, 70], [95, 165, 90], [225, 190, 60], [150, 95, 170]])


@dataclass(frozen=True)
class Photo:
    """One generated picture: the RGB canvas, the garment's box and what made it."""

    image: Image.Image
    box: Box
    """(left, top, right, bottom) of the garment on the canvas, right and bottom exclusive."""
    condition: str
    severity: int
    quality: int
    """The JPEG quality `jpeg` encodes with."""

    def jpeg(self) -> bytes:
        """The picture as JPEG bytes (Pillow, at `quality`), as a camera would write it."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()


def make_photo(
    garment: NDArray[np.uint8], condition: str, severity: int, rng: np.random.Generator
) -> Photo:
    """Draw the 28x28 `garment` (light on black, as in Fashion-MNIST) as a photo-like picture."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    if not 1 <= severity <= len(CONDITIONS[condition]):
        raise ValueError(f"{condition} has severities 1..{len(CONDITIONS[condition])}")
    scene = _Scene(rng)
    _SETUPS[condition](scene, severity)
    opacity = scene.garment_opacity(garment)
    box = _box(opacity)
    canvas = scene.background()
    if scene.shadow:
        canvas *= 1 - scene.shadow * _shadow(opacity, rng)[..., np.newaxis]
    canvas = canvas * (1 - opacity[..., np.newaxis]) + scene.garment_colour * opacity[..., None]
    for paint in scene.extras:
        canvas = paint(canvas, box)
    canvas += rng.normal(0, scene.noise, canvas.shape) if scene.noise else 0
    pixels = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Photo(Image.fromarray(pixels, "RGB"), box, condition, severity, scene.quality)


class _Scene:
    """The choices one condition makes; the defaults are a garment on light grey paper."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        grey = rng.uniform(175, 220)
        self.colour = np.array([grey, grey, grey * rng.uniform(0.95, 1.0)])
        self.garment_colour = np.full(3, rng.uniform(20, 60))
        self.noise = BASE_NOISE
        self.quality = BASE_QUALITY
        self.texture: Callable[[], Float] | None = None
        self.light: Callable[[], Float] | None = None
        self.shadow = 0.0
        self.extras: list[Callable[[Float, Box], Float]] = []
        self.tilt = 0.0
        self.edge_cut: float | None = None

    def background(self) -> Float:
        canvas = np.broadcast_to(self.colour, (CANVAS, CANVAS, 3)).astype(np.float64)
        if self.texture is not None:
            canvas = canvas + self.texture()[..., np.newaxis]
        if self.light is not None:
            canvas = canvas * self.light()[..., np.newaxis]
        return canvas

    def garment_opacity(self, garment: NDArray[np.uint8]) -> Float:
        """The garment's opacity (0..1) over the canvas, scaled, tilted and placed."""
        edge = int(self.rng.integers(GARMENT_EDGE[0], GARMENT_EDGE[1] + 1))
        picture = Image.fromarray(np.asarray(garment, np.uint8)).resize(
            (edge, edge), Image.Resampling.BICUBIC
        )
        if self.tilt:
            picture = picture.rotate(self.tilt, Image.Resampling.BICUBIC, expand=True)
        opacity = np.asarray(picture, np.float64) / 255
        rows = np.flatnonzero((opacity > BOX_LEVEL).any(axis=1))
        cols = np.flatnonzero((opacity > BOX_LEVEL).any(axis=0))
        top, left = self._place(rows, cols)
        canvas = np.zeros((CANVAS, CANVAS))
        height, width = opacity.shape
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, CANVAS), min(left + width, CANVAS)
        canvas[y0:y1, x0:x1] = opacity[y0 - top : y1 - top, x0 - left : x1 - left]
        return canvas

    def _place(self, rows: NDArray[np.intp], cols: NDArray[np.intp]) -> tuple[int, int]:
        """(top, left) of the garment's frame: anywhere it fits, or against an edge."""
        span_y, span_x = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        margin = 6
        top = int(self.rng.integers(margin, CANVAS - span_y - margin + 1)) - int(rows[0])
        left = int(self.rng.integers(margin, CANVAS - span_x - margin + 1)) - int(cols[0])
        if self.edge_cut is not None:
            side = int(self.rng.integers(4))
            cut_y, cut_x = round(self.edge_cut * span_y), round(self.edge_cut * span_x)
            if side == 0:
                top = -int(rows[0]) - cut_y
            elif side == 1:
                top = CANVAS - int(rows[-1]) - 1 + cut_y
            elif side == 2:
                left = -int(cols[0]) - cut_x
            else:
                left = CANVAS - int(cols[-1]) - 1 + cut_x
        return top, left


# --- The conditions --------------------------------------------------------------------------


def _clean(scene: _Scene, severity: int) -> None:
    scene.noise = 0.0
    scene.quality = 95


def _noise(scene: _Scene, severity: int) -> None:
    scene.noise = (8.0, 16.0, 28.0)[severity - 1]


def _jpeg(scene: _Scene, severity: int) -> None:
    scene.quality = (25, 8)[severity - 1]


def _paper(scene: _Scene, severity: int) -> None:
    amplitude = (10.0, 22.0)[severity - 1]
    rng = scene.rng

    def texture() -> Float:
        fibres = _blurred(rng.normal(0, 1, (CANVAS, CANVAS)), 1.0)
        blotches = _blurred(rng.normal(0, 1, (CANVAS, CANVAS)), 12.0)
        return amplitude * (0.6 * _unit(fibres) + 0.4 * _unit(blotches))

    scene.texture = texture


def _fabric(scene: _Scene, severity: int) -> None:
    amplitude = (12.0, 26.0)[severity - 1]
    rng = scene.rng
    period = rng.uniform(4, 7)
    scene.colour = scene.colour * rng.uniform(0.85, 1.0, 3)

    def texture() -> Float:
        y, x = _grid()
        weave = np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)
        threads = _unit(_blurred(rng.normal(0, 1, (CANVAS, CANVAS)), 0.7))
        return amplitude * (0.7 * weave + 0.3 * threads)

    scene.texture = texture


def _wood(scene: _Scene, severity: int) -> None:
    amplitude = (16.0, 32.0)[severity - 1]
    rng = scene.rng
    scene.colour = np.array([rng.uniform(185, 215), rng.uniform(145, 170), rng.uniform(100, 125)])
    angle = rng.uniform(0, np.pi)

    def texture() -> Float:
        y, x = _grid()
        across = x * math.cos(angle) + y * math.sin(angle)
        warp = 25 * _unit(_blurred(rng.normal(0, 1, (CANVAS, CANVAS)), 30.0))
        rings = np.sin(2 * np.pi * (across + warp) / rng.uniform(9, 16))
        pores = _unit(_blurred(rng.normal(0, 1, (CANVAS, CANVAS)), 0.8))
        return amplitude * (0.75 * rings + 0.25 * pores)

    scene.texture = texture


def _gradient(scene: _Scene, severity: int) -> None:
    drop = (0.30, 0.55)[severity - 1]
    rng = scene.rng
    angle = rng.uniform(0, 2 * np.pi)

    def light() -> Float:
        y, x = _grid() / (CANVAS - 1) - 0.5
        along = x * math.cos(angle) + y * math.sin(angle)
        along = (along - along.min()) / (along.max() - along.min())
        return 1 - drop * along

    scene.colour = scene.colour * 1.1
    scene.light = light


def _vignette(scene: _Scene, severity: int) -> None:
    drop = (0.35, 0.60)[severity - 1]
    rng = scene.rng
    centre = rng.uniform(0.35, 0.65, 2) * CANVAS

    def light() -> Float:
        y, x = _grid()
        radius = np.hypot(y - centre[0], x - centre[1]) / (CANVAS * 0.75)
        return np.asarray(1 - drop * np.clip(radius, 0, 1) ** 2)

    scene.colour = scene.colour * 1.1
    scene.light = light


def _shadow_condition(scene: _Scene, severity: int) -> None:
    scene.shadow = (0.25, 0.40)[severity - 1]


def _dust(scene: _Scene, severity: int) -> None:
    count = (25, 80)[severity - 1]
    rng = scene.rng

    def paint(canvas: Float, box: Box) -> Float:
        y, x = np.mgrid[0:CANVAS, 0:CANVAS]
        for _ in range(count):
            cy, cx = rng.uniform(0, CANVAS, 2)
            radius = rng.uniform(0.6, 2.2)
            speck = np.hypot(y - cy, x - cx) <= radius
            canvas[speck] = rng.uniform(20, 90)
        return canvas

    scene.extras.append(paint)


def _second_object(scene: _Scene, severity: int) -> None:
    count, low, high = ((1, 15, 25), (2, 25, 40))[severity - 1]
    rng = scene.rng

    def paint(canvas: Float, box: Box) -> Float:
        y, x = np.mgrid[0:CANVAS, 0:CANVAS]
        for _ in range(count):
            size = rng.uniform(low, high)
            for _attempt in range(50):  # somewhere clear of the garment
                cy, cx = rng.uniform(size, CANVAS - size, 2)
                gap = 15 + size / 2
                if not (box[0] - gap < cx < box[2] + gap and box[1] - gap < cy < box[3] + gap):
                    break
            if rng.random() < 0.5:
                shape = np.hypot(y - cy, x - cx) <= size / 2  # a coin or a button
            else:
                shape = (abs(y - cy) <= size / 2) & (abs(x - cx) <= size / 4)  # a tag
            canvas[shape] = scene.garment_colour * rng.uniform(0.8, 1.6)
        return canvas

    scene.extras.append(paint)


def _coloured(scene: _Scene, severity: int) -> None:
    colour = _COLOURS[scene.rng.integers(len(_COLOURS))].astype(np.float64)
    scene.colour = (colour + 255) / 2 if severity == 1 else colour


def _light_garment(scene: _Scene, severity: int) -> None:
    rng = scene.rng
    grey = rng.uniform(15, 45) if severity == 1 else rng.uniform(70, 95)
    scene.colour = np.full(3, grey)
    scene.garment_colour = np.full(3, rng.uniform(215, 245))


def _edge(scene: _Scene, severity: int) -> None:
    scene.edge_cut = (0.0, 0.10)[severity - 1]


def _rotated(scene: _Scene, severity: int) -> None:
    low, high = ((10, 15), (20, 30))[severity - 1]
    scene.tilt = float(scene.rng.uniform(low, high) * scene.rng.choice([-1, 1]))


def _low_contrast(scene: _Scene, severity: int) -> None:
    contrast = (60.0, 35.0)[severity - 1]
    scene.garment_colour = scene.colour - contrast


_SETUPS: dict[str, Callable[[_Scene, int], None]] = {
    "clean": _clean,
    "noise": _noise,
    "jpeg": _jpeg,
    "paper": _paper,
    "fabric": _fabric,
    "wood": _wood,
    "gradient": _gradient,
    "vignette": _vignette,
    "shadow": _shadow_condition,
    "dust": _dust,
    "second-object": _second_object,
    "coloured": _coloured,
    "light-garment": _light_garment,
    "edge": _edge,
    "rotated": _rotated,
    "low-contrast": _low_contrast,
}


# --- Helpers ------------------------------------------------------------------------------


def _box(opacity: Float) -> Box:
    rows = np.flatnonzero((opacity > BOX_LEVEL).any(axis=1))
    cols = np.flatnonzero((opacity > BOX_LEVEL).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _shadow(opacity: Float, rng: np.random.Generator) -> Float:
    """A soft shadow of the garment's silhouette, cast a little to one side."""
    shift = rng.uniform(8, 16, 2) * rng.choice([-1, 1], 2)
    silhouette = (opacity > 0.05).astype(np.float64)
    moved = np.roll(silhouette, (round(shift[0]), round(shift[1])), axis=(0, 1))
    return np.clip(_blurred(moved, rng.uniform(5, 9)), 0, 1)


def _blurred(values: Float, sigma: float) -> Float:
    """A Gaussian blur of a float array."""
    return np.asarray(ndimage.gaussian_filter(values, sigma), np.float64)


def _grid() -> Float:
    """Each canvas pixel's row and column, as floats (shape (2, CANVAS, CANVAS))."""
    return np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float64)


def _unit(values: Float) -> Float:
    """Scaled to a standard deviation of 1 around 0."""
    centred = values - values.mean()
    return centred / max(float(centred.std()), 1e-9)
