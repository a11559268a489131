"""Tests for cnnlab.prediction.preprocess: any picture in, Fashion-MNIST-like input out, ImageError
on junk."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, features

from cnnlab.errors import ImageError
from cnnlab.prediction.preprocess import (
    FRAMINGS,
    prepare_image,
    prepare_whole_image,
    to_model_input,
)

SIZE = (28, 28)


# --- Helpers ---------------------------------------------------------------------------------


def shirt_polygon(width: int, height: int) -> list[tuple[float, float]]:
    """A T-shirt outline, symmetric about the vertical axis, wider than tall."""
    points = [(0.33, 0.1), (0.67, 0.1), (0.9, 0.3), (0.8, 0.45), (0.67, 0.38), (0.67, 0.9)]
    points += [(0.33, 0.9), (0.33, 0.38), (0.2, 0.45), (0.1, 0.3)]
    return [(x * width, y * height) for x, y in points]


def draw_ellipse(mode: str, size: tuple[int, int], background: object, fill: object) -> Image.Image:
    """An ellipse in the middle half of the picture."""
    image = Image.new(mode, size, background)  # type: ignore[arg-type]
    width, height = size
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4),
        fill=fill,  # type: ignore[arg-type]
    )
    return image


def centre_of_mass(array: np.ndarray) -> tuple[float, float]:
    plane = array[..., 0]
    rows, cols = np.indices(plane.shape)
    return float((rows * plane).sum() / plane.sum()), float((cols * plane).sum() / plane.sum())


def extent(array: np.ndarray, threshold: float = 0.1) -> tuple[int, int]:
    """(rows, columns) spanned by pixels brighter than `threshold`."""
    rows = np.flatnonzero((array[..., 0] > threshold).any(axis=1))
    cols = np.flatnonzero((array[..., 0] > threshold).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def assert_model_input(array: np.ndarray) -> None:
    assert array.shape == (*SIZE, 1)
    assert array.dtype == np.float32
    assert array.min() >= 0.0 and array.max() <= 1.0


def assert_light_object_on_black(array: np.ndarray) -> None:
    """A centred object much brighter than the black corners."""
    assert_model_input(array)
    corners = [array[:3, :3], array[:3, -3:], array[-3:, :3], array[-3:, -3:]]
    assert max(float(corner.max()) for corner in corners) < 0.05
    assert float(array[11:17, 11:17].mean()) > 0.6


# --- Pictures that should come out like Fashion-MNIST ---------------------------------------


def test_dark_shirt_on_white_jpeg_becomes_light_centred_and_fills_its_long_axis(
    tmp_path: Path,
) -> None:
    image = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(image).polygon(shirt_polygon(300, 200), fill=(40, 30, 60))
    path = tmp_path / "shirt.jpg"
    image.save(path, quality=80)

    array = to_model_input(path)

    assert_light_object_on_black(array)
    row, col = centre_of_mass(array)
    assert abs(row - 13.5) < 2 and abs(col - 13.5) < 2
    assert array[:, 0].max() > 0.2 and array[:, -1].max() > 0.2  # wider than tall: touches sides
    assert array[0].max() < 0.05 and array[-1].max() < 0.05  # and not top and bottom
    assert float(np.median(array)) < 0.02  # the background is black


def test_light_drawing_on_dark_canvas_is_not_negated(tmp_path: Path) -> None:
    image = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(image).ellipse((30, 30, 170, 170), outline=255, width=12)
    path = tmp_path / "ring.png"
    image.save(path)

    array = to_model_input(path)

    assert_model_input(array)
    assert array[13:15, 13:15].max() < 0.05  # the inside of the ring stays dark
    assert array[13:15, 0:3].max() > 0.5  # the ring itself is light


def test_dark_object_on_mid_grey_background_becomes_light(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    draw_ellipse("L", (120, 120), background=100, fill=20).save(path)

    assert_light_object_on_black(to_model_input(path))


def test_tall_thin_object_keeps_its_aspect_ratio(tmp_path: Path) -> None:
    image = Image.new("L", (200, 400), 255)
    ImageDraw.Draw(image).rectangle((90, 50, 109, 349), fill=0)  # 20 x 300
    path = tmp_path / "pole.png"
    image.save(path)

    array = to_model_input(path)

    rows, cols = extent(array)
    assert rows == 28
    assert 1 <= cols <= 4  # 28 * 20 / 300 ≈ 1.9
    assert abs(centre_of_mass(array)[1] - 13.5) < 1.5


def test_large_photo_like_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    height, width = 1500, 2000
    ramp = np.linspace(185, 195, width)[np.newaxis, :]  # an uneven studio background
    pixels = ramp + rng.normal(0, 3, (height, width))
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    ImageDraw.Draw(photo).polygon(shirt_polygon(width, height), fill=(90, 60, 40))
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=90)

    start = time.perf_counter()
    prepared = prepare_image(path)
    elapsed = time.perf_counter() - start

    assert not prepared.blank
    assert_light_object_on_black(prepared.array)
    assert elapsed < 5


def test_isolated_noisy_pixel_does_not_move_the_trim(tmp_path: Path) -> None:
    clean = draw_ellipse("L", (200, 200), background=255, fill=0)
    dusty = clean.copy()
    dusty.putpixel((5, 190), 0)
    clean.save(tmp_path / "clean.png")
    dusty.save(tmp_path / "dusty.png")

    np.testing.assert_array_equal(
        to_model_input(tmp_path / "clean.png"), to_model_input(tmp_path / "dusty.png")
    )


def _rgba_dark_on_transparent() -> Image.Image:
    return draw_ellipse("RGBA", (100, 100), (0, 0, 0, 0), (50, 50, 50, 255))


def _rgba_white_on_transparent() -> Image.Image:
    return draw_ellipse("RGBA", (100, 100), (255, 255, 255, 0), (255, 255, 255, 255))


def _palette_with_transparency() -> Image.Image:
    image = draw_ellipse("P", (100, 100), 0, 1)
    image.putpalette([0, 0, 0, 20, 20, 90] + [0] * 762)  # index 0 is black, but transparent
    image.info["transparency"] = 0
    return image


def _la() -> Image.Image:
    return draw_ellipse("LA", (100, 100), (255, 0), (30, 255))


def _cmyk() -> Image.Image:
    return draw_ellipse("CMYK", (100, 100), (0, 0, 0, 0), (0, 0, 0, 230))


def _sixteen_bit() -> Image.Image:
    # Background and object are both far above 255: clipping to 8 bits would make it blank.
    inside = np.asarray(draw_ellipse("L", (100, 100), 0, 255)) > 0
    return Image.fromarray(np.where(inside, 65_535, 20_000).astype(np.uint16))


def _one_bit() -> Image.Image:
    return draw_ellipse("1", (100, 100), 1, 0)


def _rgb() -> Image.Image:
    return draw_ellipse("RGB", (100, 100), (250, 250, 250), (120, 10, 10))


@pytest.mark.parametrize(
    ("make", "suffix", "mode"),
    [
        pytest.param(_rgba_dark_on_transparent, "png", "RGBA", id="rgba-dark-on-transparent"),
        pytest.param(_rgba_white_on_transparent, "png", "RGBA", id="rgba-white-on-transparent"),
        pytest.param(_palette_with_transparency, "png", "P", id="palette-with-transparency"),
        pytest.param(_la, "png", "LA", id="la"),
        pytest.param(_cmyk, "jpg", "CMYK", id="cmyk-jpeg"),
        pytest.param(_sixteen_bit, "png", "I;16", id="16-bit-png"),
        pytest.param(_one_bit, "png", "1", id="1-bit"),
        pytest.param(_rgb, "webp", "RGB", id="webp"),
        pytest.param(_rgb, "bmp", "RGB", id="bmp"),
        pytest.param(_rgb, "tiff", "RGB", id="tiff"),
        pytest.param(_rgb, "gif", "P", id="gif"),
    ],
)
def test_image_modes_and_formats(
    tmp_path: Path, make: Callable[[], Image.Image], suffix: str, mode: str
) -> None:
    if suffix == "webp" and not features.check("webp"):
        pytest.skip("Pillow was built without WebP")
    path = tmp_path / f"picture.{suffix}"
    make().save(path)
    with Image.open(path) as written:
        assert written.mode.startswith(mode)  # the file really holds the mode under test

    prepared = prepare_image(path)

    assert not prepared.blank
    assert_light_object_on_black(prepared.array)


def test_animated_gif_uses_its_first_frame(tmp_path: Path) -> None:
    wide = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(wide).rectangle((10, 40, 89, 59), fill=0)
    tall = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(tall).rectangle((40, 10, 59, 89), fill=0)
    path = tmp_path / "anim.gif"
    wide.save(path, save_all=True, append_images=[tall], duration=100, loop=0)
    with Image.open(path) as written:
        assert getattr(written, "n_frames", 1) == 2

    rows, cols = extent(to_model_input(path))

    assert cols == 28 and rows < 10


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (200, 100), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 40, 179, 59), fill="black")  # a wide bar ...
    draw.rectangle((20, 20, 59, 79), fill="black")  # ... with a heavy left end
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the stored left end goes to the top
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=90)

    array = to_model_input(path)

    rows, cols = extent(array)
    assert rows == 28 and cols < 28  # now tall
    assert array[:14].sum() > 1.5 * array[14:].sum()  # heavy end on top


def test_fashion_mnist_uint8_array_passes_through() -> None:
    rng = np.random.default_rng(1)
    row = np.zeros(SIZE, np.uint8)
    row[4:26, 6:22] = rng.integers(60, 256, (22, 16), dtype=np.uint8)

    array = to_model_input(row)

    assert_model_input(array)
    np.testing.assert_allclose(array[..., 0], row / 255, atol=1e-7)
    np.testing.assert_array_equal(to_model_input(row[..., np.newaxis]), array)


def test_model_ready_float_array_passes_exactly() -> None:
    ready = np.random.default_rng(2).random((*SIZE, 1), dtype=np.float32)

    np.testing.assert_array_equal(to_model_input(ready), ready)
    np.testing.assert_array_equal(to_model_input(ready[..., 0]), ready)


def test_fashion_mnist_like_png_passes_nearly_unchanged(tmp_path: Path) -> None:
    row = np.zeros(SIZE, np.uint8)
    row[2:26, 0:28] = 200  # a garment touching both sides, as most Fashion-MNIST images do
    row[8:26, 6:22] = 255
    path = tmp_path / "row.png"
    Image.fromarray(row).save(path)

    array = to_model_input(path)

    assert float(np.abs(array[..., 0] - row / 255).mean()) < 0.05


def test_other_sources_file_object_bytes_pil_and_rgb_array(tmp_path: Path) -> None:
    image = draw_ellipse("RGB", (80, 60), "white", "black")
    path = tmp_path / "ellipse.png"
    image.save(path)
    expected = to_model_input(path)

    with path.open("rb") as handle:
        np.testing.assert_array_equal(to_model_input(handle), expected)
    np.testing.assert_array_equal(to_model_input(path.read_bytes()), expected)
    np.testing.assert_array_equal(to_model_input(str(path)), expected)
    np.testing.assert_array_equal(to_model_input(image), expected)
    np.testing.assert_array_equal(to_model_input(np.asarray(image)), expected)
    np.testing.assert_array_equal(to_model_input(np.asarray(image) / 255.0), expected)


def test_custom_size_is_height_width() -> None:
    picture = draw_ellipse("L", (100, 100), 255, 0)

    assert to_model_input(picture, (32, 20)).shape == (32, 20, 1)


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("RGB", (50, 40), (128, 128, 128)),
        Image.new("L", (50, 40), 255),
        Image.new("RGBA", (50, 40), (0, 0, 0, 0)),
        np.zeros((40, 50), np.uint8),
        np.full(SIZE, 0.3, np.float32),
    ],
    ids=["grey", "white", "transparent", "black-array", "flat-ready-array"],
)
def test_blank_picture_gives_zeros_and_says_so(picture: object) -> None:
    prepared = prepare_image(picture)  # type: ignore[arg-type]

    assert prepared.blank
    assert_model_input(prepared.array)
    if not isinstance(picture, np.ndarray) or picture.shape != SIZE:
        assert not prepared.array.any()


def test_framings_move_every_side_of_the_box_out_and_in(tmp_path: Path) -> None:
    image = Image.new("L", (300, 300), 230)
    ImageDraw.Draw(image).ellipse((50, 50, 249, 249), fill=30)  # a disc 200 across
    path = tmp_path / "disc.png"
    image.save(path)

    prepared = prepare_image(path)

    inputs = prepared.inputs
    assert inputs.shape == (len(FRAMINGS), *SIZE, 1)
    np.testing.assert_array_equal(inputs[0], prepared.array)
    ink = {f: float((framed > 0.5).mean()) for f, framed in zip(FRAMINGS, inputs, strict=True)}
    # a wider box puts background round the disc; a tighter one cuts it, so it fills more
    by_fraction = [ink[fraction] for fraction in sorted(FRAMINGS)]
    assert by_fraction == sorted(by_fraction, reverse=True) and len(set(by_fraction)) == 5
    assert max(extent(inputs[FRAMINGS.index(max(FRAMINGS))])) < 28  # margins all round at +3%


# --- Whole images at their own size (fully convolutional models) ---------------------------


def test_whole_image_keeps_size_and_place_and_is_levelled_like_the_data() -> None:
    photo = Image.new("RGB", (60, 40), (250, 250, 250))  # a dark object on white
    ImageDraw.Draw(photo).rectangle((40, 5, 51, 30), fill=(30, 30, 90))
    prepared = prepare_whole_image(photo)
    array = prepared.array
    assert array.shape == (40, 60, 1) and array.dtype == np.float32 and not prepared.blank
    inside, outside = array[8:28, 42:50], np.delete(array, np.s_[3:33], axis=0)
    assert inside.min() > 0.9  # negated: the object is light, where it was
    assert outside.max() == 0.0  # the background is black and nothing was moved or centred
    assert array[:, :38].max() == 0.0


def test_whole_image_takes_arrays_as_model_ready() -> None:
    array = np.arange(50 * 30, dtype=np.uint32).reshape(50, 30) % 256
    prepared = prepare_whole_image(array.astype(np.uint8))
    np.testing.assert_allclose(prepared.array[:, :, 0], array / 255, rtol=1e-6)
    blank = prepare_whole_image(Image.new("L", (32, 32), 200))
    assert blank.blank and blank.array.shape == (32, 32, 1) and blank.array.max() == 0


@pytest.mark.parametrize(
    ("size", "message"),
    [((20, 40), r"20x40 pixels is smaller than the 28x28"), ((1100, 30), r"edge over 1024")],
)
def test_whole_image_refuses_sizes_it_cannot_keep(size: tuple[int, int], message: str) -> None:
    with pytest.raises(ImageError, match=message):
        prepare_whole_image(Image.new("L", size))
    with pytest.raises(ImageError, match=message):
        prepare_whole_image(np.zeros(size[::-1], np.uint8))
