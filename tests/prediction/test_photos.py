"""Finding the garment on photo-like pictures: every condition of `photoset`.

The photos are drawn from a synthetic 28x28 garment (no dataset needed), encoded as JPEG, and
read back through `prepare_image`; the found box must match the known placement.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from photoset import CANVAS, CONDITIONS, make_photo
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.prediction.preprocess import BORDER_FINDER, Finder, prepare_image, preprocess_steps

BOX_TOLERANCE = 6  # pixels of a 320-pixel canvas: "within a few pixels"
CORNERS = [np.s_[:3, :3], np.s_[:3, -3:], np.s_[-3:, :3], np.s_[-3:, -3:]]


@pytest.fixture(scope="module")
def garment() -> np.ndarray:
    """A T-shirt, light on black as in Fashion-MNIST, shaded with a darker stripe."""
    image = Image.new("L", (28, 28), 0)
    outline = [(9, 3), (19, 3), (26, 8), (23, 12), (19, 10), (19, 25), (9, 25), (9, 10), (5, 12)]
    outline += [(2, 8)]
    ImageDraw.Draw(image).polygon(outline, fill=230)
    pixels = np.asarray(image, np.float64)
    shading = np.linspace(1.0, 0.7, 28)[:, np.newaxis]
    pixels = pixels * shading
    pixels[14:17] *= 0.6  # a stripe across the chest
    return np.round(pixels).astype(np.uint8)


def _decoded(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg))


@pytest.mark.parametrize("condition", [c for c in CONDITIONS if c != "clean"] + ["clean"])
def test_the_found_box_matches_the_known_placement(garment: np.ndarray, condition: str) -> None:
    for seed in range(3):
        photo = make_photo(garment, condition, 1, np.random.default_rng(seed))
        prepared = prepare_image(_decoded(photo.jpeg()))

        assert not prepared.blank and prepared.box is not None
        misses = [found - known for found, known in zip(prepared.box, photo.box, strict=True)]
        if condition == "dust":
            # A speck that lands on the garment's edge is part of what stands out there, so
            # the box may grow towards it (seed 2 has one above the collar), never shrink.
            grown = [-misses[0], -misses[1], misses[2], misses[3]]
            assert min(grown) >= -BOX_TOLERANCE and max(grown) <= 3 * BOX_TOLERANCE
            continue
        assert max(map(abs, misses)) <= BOX_TOLERANCE, (condition, seed, prepared.box, photo.box)


def test_on_strong_grain_a_faint_garment_is_found_by_the_pictures_own_split(
    garment: np.ndarray,
) -> None:
    # Strong wood grain raises the background's spread until 4 spreads is above a faint
    # garment: only scraps of it stood out and the box was a piece of it. Otsu's split of the
    # picture is lower there, and caps the bar (down to 2.5 spreads).
    faint = np.round(garment * 0.6).astype(np.uint8)
    right = {"spread": 0, "spread-only": 0}
    for seed in range(12):
        photo = make_photo(faint, "wood", 2, np.random.default_rng(seed))
        jpeg = photo.jpeg()  # one encoding, read by both thresholds
        for threshold in right:
            box = prepare_image(_decoded(jpeg), finder=Finder(threshold=threshold)).box
            misses = (
                [] if box is None else [abs(a - b) for a, b in zip(box, photo.box, strict=True)]
            )
            right[threshold] += bool(misses) and max(misses) <= BOX_TOLERANCE
    assert right["spread"] >= 8, right  # 9 of 12 when written
    assert right["spread-only"] <= 3, right  # 1 of 12 when written


def test_the_old_method_kept_the_whole_noisy_frame(garment: np.ndarray) -> None:
    # Issue 13: sensor noise cleared the fixed 5% threshold, so the trim kept everything.
    photo = make_photo(garment, "noise", 2, np.random.default_rng(0))
    old = prepare_image(_decoded(photo.jpeg()), finder=BORDER_FINDER)
    new = prepare_image(_decoded(photo.jpeg()))

    assert old.box == (0, 0, CANVAS, CANVAS)
    assert new.box is not None and new.box != old.box


def test_a_light_garment_on_a_dark_background_stays_light(garment: np.ndarray) -> None:
    photo = make_photo(garment, "light-garment", 1, np.random.default_rng(1))
    steps = preprocess_steps(_decoded(photo.jpeg()))

    assert not steps.object_is_dark
    array = steps.array[:, :, 0]
    assert max(float(array[c].max()) for c in CORNERS) < 0.05  # black around the shirt
    assert array[8:20, 8:20].mean() > 0.4  # the garment is light


def test_a_dark_garment_is_negated_and_the_background_is_zero(garment: np.ndarray) -> None:
    photo = make_photo(garment, "wood", 1, np.random.default_rng(2))
    steps = preprocess_steps(_decoded(photo.jpeg()))

    assert steps.object_is_dark
    array = steps.array[:, :, 0]
    assert (array == 0).mean() > 0.25  # the wood grain around the shirt is gone
    assert array[8:20, 8:20].mean() > 0.4


def test_the_box_is_in_the_original_pictures_pixels_when_it_is_reduced(
    garment: np.ndarray,
) -> None:
    photo = make_photo(garment, "noise", 1, np.random.default_rng(3))
    big = photo.image.resize((CANVAS * 8, CANVAS * 8), Image.Resampling.BILINEAR)  # 2,560 px

    prepared = prepare_image(big)

    assert prepared.box is not None
    misses = [abs(f - 8 * k) for f, k in zip(prepared.box, photo.box, strict=True)]
    assert max(misses) <= 8 * BOX_TOLERANCE


def test_photos_are_the_same_for_the_same_seed(garment: np.ndarray) -> None:
    first = make_photo(garment, "dust", 2, np.random.default_rng(9))
    second = make_photo(garment, "dust", 2, np.random.default_rng(9))

    assert first.jpeg() == second.jpeg() and first.box == second.box
    with pytest.raises(ValueError, match="unknown condition"):
        make_photo(garment, "fog", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="severities"):
        make_photo(garment, "noise", 9, np.random.default_rng(0))


def test_visualize_preprocess_draws_every_step_without_a_run(
    garment: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = make_photo(garment, "shadow", 1, np.random.default_rng(4))
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo.jpeg())
    out = tmp_path / "steps.png"

    assert main(["visualize", "preprocess", str(path), "-o", str(out)]) == 0

    printed = capsys.readouterr().out
    assert "found box [" in printed and str(out) in printed
    with Image.open(out) as picture:
        assert picture.width > 3 * picture.height  # one row of five panels
    steps = preprocess_steps(path)
    assert steps.grey.shape == steps.background.shape == steps.mask.shape == (CANVAS, CANVAS)
    assert steps.crop is not None and steps.array.shape == (28, 28, 1)
    assert f"[{', '.join(map(str, steps.box or ()))}]" in printed


# --- Issue 27: a large, light, low-contrast pullover on white, in an EXIF-rotated JPEG --------

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
WHITE = 250.0  # the background's grey


def pullover() -> np.ndarray:
    """A long-sleeved pullover, light on black as in Fashion-MNIST: a faint body and sleeves
    (45 of 255), a darker seam down each side (200) and neckline (130), filling the frame."""
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    outline = [(8, 0), (19, 0), (23, 3), (24, 27), (20, 27), (20, 9), (19, 8), (19, 27), (8, 27)]
    outline += [(8, 8), (7, 9), (7, 27), (3, 27), (4, 3)]
    draw.polygon(outline, fill=45)
    draw.line([(7, 9), (7, 27)], fill=200)
    draw.line([(20, 9), (20, 27)], fill=200)
    draw.line([(11, 0), (16, 0)], fill=130)
    return np.asarray(image)


def light_on_white(
    garment: np.ndarray, grey: float, seed: int, orientation: int | None
) -> tuple[bytes, tuple[int, int, int, int]]:
    """`garment` drawn 190 px wide in `grey` (by its opacity) on a 240x240 white canvas with
    sensor noise, as a JPEG; with an EXIF `orientation` (6 or 8), its pixels are stored turned
    so that the upright picture is the garment upright. Returns the JPEG and the known box."""
    rng = np.random.default_rng(seed)
    drawn = Image.fromarray(garment).resize((190, 190), Image.Resampling.BICUBIC)
    opacity = np.zeros((240, 240))
    opacity[25:215, 25:215] = np.asarray(drawn, np.float64) / 255
    canvas = WHITE * (1 - opacity) + grey * opacity + rng.normal(0, 2, opacity.shape)
    picture = Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8)).convert("RGB")
    buffer = io.BytesIO()
    if orientation is None:
        picture.save(buffer, "JPEG", quality=90)
    else:  # 6: a viewer turns it 90 degrees clockwise, so it is stored turned anticlockwise
        turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
        exif = Image.Exif()
        exif[0x0112] = orientation
        picture.transpose(turn).save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    rows = np.flatnonzero((opacity > 0.1).any(axis=1))
    cols = np.flatnonzero((opacity > 0.1).any(axis=0))
    return buffer.getvalue(), (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def covered(box: tuple[int, int, int, int] | None, known: tuple[int, int, int, int]) -> float:
    """The smaller of the fractions of the known box's width and height that `box` covers."""
    if box is None:
        return 0.0
    width = min(box[2], known[2]) - max(box[0], known[0])
    height = min(box[3], known[3]) - max(box[1], known[1])
    return min(width / (known[2] - known[0]), height / (known[3] - known[1]))


@pytest.mark.parametrize("orientation", [None, 6, 8])
def test_a_large_light_pullover_on_white_is_boxed_whole(orientation: int | None) -> None:
    # Issue 27: the box was a strip beside one seam (x 159..169 of a garment at 45..195), and
    # the model answered Dress. Grey 210 on white: the body is 7 levels below the background.
    for seed in range(3):
        jpeg, known = light_on_white(pullover(), 210.0, seed, orientation)
        box = prepare_image(jpeg).box

        assert covered(box, known) >= 0.9, (seed, box, known)


def test_the_background_does_not_sink_into_a_large_faint_garment() -> None:
    # The surface's rejection rounds took the faint body in, round by round, and the fit became
    # a bowl under it (down to 243 on this 250 white): the body no longer stood out from it.
    jpeg, (left, top, right, bottom) = light_on_white(pullover(), 210.0, 0, 6)
    steps = preprocess_steps(jpeg)

    under_garment = steps.background[top:bottom, left:right]
    assert abs(float(under_garment.min()) - WHITE) < 1.5
    assert abs(float(under_garment.mean()) - WHITE) < 1.0


def test_a_dark_seam_does_not_narrow_the_box_to_its_surroundings() -> None:
    # Edges were judged sharp against the garment's darkest 0.5% (its seams): its own faint
    # outline never was, and the box was narrower than the garment's own mask (x 55..184 of a
    # mask at 48..186 for seed 2). Grey 215: the body 6 levels below the white, the seams 28.
    for seed in range(3):
        jpeg, known = light_on_white(pullover(), 215.0, seed, 6)
        steps = preprocess_steps(jpeg)
        cols = np.flatnonzero(steps.mask.any(axis=0))

        assert steps.box is not None
        assert steps.box[2] - steps.box[0] >= 0.95 * (cols[-1] + 1 - cols[0]), (seed, steps.box)
        assert covered(steps.box, known) >= 0.9, (seed, steps.box, known)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_pullovers_light_on_white_in_rotated_jpegs_are_boxed_whole() -> None:
    from cnnlab.data.idx import read_idx

    images = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    pullovers = images[labels == 2][:40]
    # 2 of these 40 were boxed at a fifth of their width when written (grey 205: contrast 45)
    misses = []
    for seed, garment in enumerate(pullovers):
        jpeg, known = light_on_white(garment, 205.0, seed, 6 if seed % 2 else 8)
        box = prepare_image(jpeg).box
        if covered(box, known) < 0.9:
            misses.append((seed, box, known))
    assert not misses
