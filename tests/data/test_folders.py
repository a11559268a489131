"""Image folders: scanning, headers, the recipe for every mode, and the streamed batches."""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import struct
import tracemalloc
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageOps

from cnnlab.data.folders import (
    FolderBatches,
    Recipe,
    choose_color,
    choose_image_size,
    inspect,
    scan,
    stream,
)
from cnnlab.errors import ConfigError, DataError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def solid(size: tuple[int, int], color: tuple[int, ...] | int, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, color)


def write_classes(root: Path, counts: dict[str, int], size: tuple[int, int] = (8, 8)) -> None:
    """`counts[name]` small PNGs in `root/name/`, each a distinct grey level."""
    level = 0
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            solid(size, level % 256, "L").save(root / name / f"{index:03d}.png")
            level += 1


def indices(x: np.ndarray) -> list[int]:
    """The grey level each picture of a batch was written with (`write_classes`, `numbered`)."""
    return [int(v) for v in np.rint(x[:, 0, 0, 0] * 255)]


def numbered(root: Path, n: int, classes: int = 2) -> Path:
    """`n` 8x8 grey PNGs whose level is their number, over `classes` class folders."""
    for index in range(n):
        folder = root / f"c{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        solid((8, 8), index, "L").save(folder / f"{index:03d}.png")
    return root


# -- scan ----------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A dataset folder beside, not in, the test's own XDG cache folder (tests/data/conftest)."""
    return tmp_path / "data"


def test_class_folders_are_split_stratified_and_ignore_other_files(root: Path) -> None:
    write_classes(root, {"b": 12, "a": 12})
    (root / "a" / "README").write_text("not a picture")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    solid((8, 8), 0, "L").save(root / "a" / ".hidden.png")
    (root / ".git").mkdir()
    solid((8, 8), 0, "L").save(root / ".git" / "x.png")
    solid((8, 8), 0, "L").save(root / "b" / "UPPER.JPG", "JPEG")
    solid((8, 8), 0, "L").save(root / "b" / "scan.TiFf", "TIFF")

    data = scan(root, validation_fraction=0.1, seed=0)

    assert data.class_names == ("a", "b")
    assert data.layout == "classes"
    names = {p.name for p in data.paths}
    assert {"UPPER.JPG", "scan.TiFf"} <= names
    assert not {"README", ".DS_Store", ".hidden.png", "x.png"} & names
    assert data.ignored == 3
    assert len(data.paths) == len(set(data.paths)) == 26
    assert len(data.test) == round(26 / 6)
    assert set(data.test.counts(2)) == {2}  # both classes share the test split
    assert len(data.val) == round(len(data.train.paths + data.val.paths) * 0.1)
    again = scan(root, validation_fraction=0.1, seed=0)
    assert again.train.paths == data.train.paths and again.test.paths == data.test.paths
    other_seed = scan(root, validation_fraction=0.1, seed=5)
    assert other_seed.test.paths == data.test.paths  # the test hold-out does not follow the seed
    assert other_seed.val.paths != data.val.paths


def test_train_and_test_folders(root: Path) -> None:
    write_classes(root / "train", {"cat": 10, "dog": 10})
    write_classes(root / "test", {"cat": 3, "dog": 2})
    data = scan(root, validation_fraction=0.2)
    assert data.layout == "splits"
    assert data.class_names == ("cat", "dog")
    assert len(data.test) == 5 and all(p.parts[-3] == "test" for p in data.test.paths)
    assert list(data.test.labels) == [0, 0, 0, 1, 1]
    assert len(data.val) == 4 and all(p.parts[-3] == "train" for p in data.val.paths)
    assert len(data.train) == 16


@pytest.mark.parametrize("name", ["val", "valid", "validation"])
def test_a_validation_folder_is_used_as_it_is(root: Path, name: str) -> None:
    write_classes(root / "train", {"cat": 4, "dog": 4})
    write_classes(root / "test", {"cat": 1, "dog": 1})
    write_classes(root / name, {"cat": 2, "dog": 1})
    data = scan(root, validation_fraction=0.5)
    assert len(data.train) == 8  # nothing held out of train/
    assert len(data.val) == 3 and all(p.parts[-3] == name for p in data.val.paths)
    assert name in data.source


def test_train_without_test_holds_a_test_split_out(root: Path) -> None:
    write_classes(root / "train", {"cat": 6, "dog": 6})
    data = scan(root, validation_fraction=0)
    assert len(data.test) == 2 and len(data.train) == 10 and len(data.val) == 0


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"train/cat": 2, "train/dog": 2, "test/cat": 1, "test/bird": 1}, "missing dog"),
        ({"train/cat": 2, "train/dog": 2, "test/cat": 1, "test/dog": 1, "test/owl": 1}, "owl"),
        ({"test/cat": 1, "test/dog": 1}, "no train/"),
        ({"train/cat": 2, "train/dog": 2, "cat": 1}, "mixes split folders"),
        (
            {
                "train/cat": 2,
                "train/dog": 2,
                "val/cat": 1,
                "val/dog": 1,
                "valid/cat": 1,
                "valid/dog": 1,
            },
            "keep one validation folder",
        ),
        ({"cat": 2}, "only one class folder"),
        ({"cat": 2, "dog": 0}, "dog: no images"),
    ],
)
def test_inconsistent_folders_say_what_to_do(
    root: Path, layout: dict[str, int], message: str
) -> None:
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for index in range(count):
            solid((4, 4), index, "L").save(root / folder / f"{index}.png")
    with pytest.raises(DataError, match=message):
        scan(root)


def test_no_class_folders_and_empty_splits_are_errors(root: Path) -> None:
    root.mkdir()
    solid((4, 4), 0, "L").save(root / "loose.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan(root)
    with pytest.raises(DataError, match="not a folder"):
        scan(root / "missing")
    split = root / "split"
    write_classes(split / "train", {"cat": 2, "dog": 2})
    (split / "test" / "cat").mkdir(parents=True)
    (split / "test" / "dog").mkdir(parents=True)
    (split / "test" / "dog" / "notes.txt").write_text("no pictures here")
    with pytest.raises(DataError, match=r"test: no images in its class folders"):
        scan(split)


# -- headers and defaults ------------------------------------------------------------------------


def test_inspect_reads_headers_and_names_unreadable_files(tmp_path: Path) -> None:
    solid((30, 20), RED).save(tmp_path / "wide.png")
    rotated = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    solid((30, 20), RED).save(rotated, "JPEG", exif=exif.tobytes())
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture")
    solid((100, 100), 0, "L").save(tmp_path / "big.png")
    paths = sorted(tmp_path.iterdir())

    found = inspect(paths, max_pixels=5000)

    by_name = {p.name: row for row, p in enumerate(found.paths)}
    assert tuple(found.sizes[by_name["wide.png"]]) == (20, 30)
    assert tuple(found.sizes[by_name["turned.jpg"]]) == (30, 20)  # upright: EXIF turns it
    assert found.modes[by_name["big.png"]] == ""
    assert set(found.problems) == {str(tmp_path / n) for n in ("empty.png", "text.jpg", "big.png")}
    assert "empty" in found.problems[str(tmp_path / "empty.png")]
    assert "decompression-bomb" in found.problems[str(tmp_path / "big.png")]
    assert list(found.readable) == [n in ("turned.jpg", "wide.png") for n in by_name]


def test_image_size_is_the_median_short_side_to_a_multiple_of_8(tmp_path: Path) -> None:
    for index, (w, h) in enumerate([(50, 400), (70, 90), (300, 300)]):
        solid((w, h), 0, "L").save(tmp_path / f"{index}.png")
    assert choose_image_size(inspect(sorted(tmp_path.iterdir()))) == (72, 72)  # median 70
    small = tmp_path / "small"
    small.mkdir()
    solid((10, 12), 0, "L").save(small / "a.png")
    assert choose_image_size(inspect([small / "a.png"])) == (32, 32)
    solid((2000, 1000), 0, "L").save(small / "b.png")
    solid((1000, 3000), 0, "L").save(small / "c.png")
    assert choose_image_size(inspect(sorted(small.iterdir()))) == (128, 128)


def test_auto_color_is_grayscale_until_one_picture_has_colour(tmp_path: Path) -> None:
    solid((40, 40), 90, "L").save(tmp_path / "grey.png")
    solid((40, 40), (120, 120, 120)).save(tmp_path / "grey-rgb.jpg", "JPEG")
    pixels = np.full((40, 40, 3), 200, np.uint8)
    pixels[:, :, 0] = np.arange(40, dtype=np.uint8)[:, None] * 5  # varied, still neutral-ish
    pixels[:, :, 1] = pixels[:, :, 2] = pixels[:, :, 0]
    Image.fromarray(pixels).save(tmp_path / "grey-ramp.webp", quality=60)
    assert choose_color(inspect(sorted(tmp_path.iterdir()))) == "grayscale"
    solid((40, 40), RED).save(tmp_path / "red.png")
    assert choose_color(inspect(sorted(tmp_path.iterdir()))) == "rgb"


# -- the recipe: modes -----------------------------------------------------------------------------


def load(
    path: Path, size: tuple[int, int], color: str = "rgb", resize: str = "squash"
) -> np.ndarray:
    return Recipe(size, color, resize).load(path)  # type: ignore[arg-type]


def test_rgba_and_la_are_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red: white
    rgba[0, 1] = (0, 0, 255, 255)  # opaque blue
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black: mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = load(tmp_path / "rgba.png", (2, 2))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == WHITE and tuple(out[0, 1]) == BLUE
    assert tuple(out[1, 0]) == (127, 127, 127)
    la = np.array([[[0, 0], [0, 255]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert load(tmp_path / "la.png", (1, 2), "grayscale")[0, :, 0].tolist() == [255, 0]


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png", transparency=0)
    out = load(tmp_path / "p.png", (1, 2))
    assert tuple(out[0, 0]) == WHITE and tuple(out[0, 1]) == GREEN
    image.save(tmp_path / "p.gif", transparency=1)
    assert tuple(load(tmp_path / "p.gif", (1, 2))[0, 0]) == RED


def test_cmyk_jpeg_sixteen_bit_and_webp(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg", quality=95)
    cyan = load(tmp_path / "cyan.jpg", (16, 16)).astype(int)
    assert np.abs(cyan[8, 8] - (0, 255, 255)).max() <= 6

    deep = np.array([[0, 65535, 128 * 257, 1000]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as opened:
        assert opened.mode.startswith("I")  # Pillow keeps the 16 bits
    assert load(tmp_path / "deep.png", (1, 4), "grayscale")[0, :, 0].tolist() == [0, 255, 128, 4]
    assert load(tmp_path / "deep.png", (1, 4))[0, 1].tolist() == [255, 255, 255]

    split = np.zeros((4, 4, 3), np.uint8)
    split[:, :2] = RED
    split[:, 2:] = BLUE
    Image.fromarray(split).save(tmp_path / "lossless.webp", lossless=True)
    assert np.array_equal(load(tmp_path / "lossless.webp", (4, 4)), split)


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    upright = np.full((20, 40, 3), 255, np.uint8)  # 40 wide, 20 tall, red top-left corner
    upright[:8, :8] = RED
    for orientation, turn in ((3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                              (8, Image.Transpose.ROTATE_270)):  # fmt: skip
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        Image.fromarray(upright).transpose(turn).save(path, quality=95, exif=exif.tobytes())
        out = load(path, (20, 40)).astype(int)
        assert out[2, 2, 0] > 200 and out[2, 2, 1] < 60, orientation  # red where it belongs
        assert out[2, 37, 1] > 200 and out[17, 2, 1] > 200, orientation  # white elsewhere
        # A picture already turned upright (as images.load_image gives) is not turned again
        with Image.open(path) as opened:
            upright_already = ImageOps.exif_transpose(opened)
        assert np.array_equal(Recipe((20, 40)).pixels(upright_already), out)
    # A PNG may keep its EXIF after the pixels, where only decoding finds it
    stored = io.BytesIO()
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(stored, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    payload = exif.tobytes().removeprefix(b"Exif\x00\x00")
    chunk = b"eXIf" + payload
    late = struct.pack(">I", len(payload)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    png = stored.getvalue()
    (tmp_path / "late.png").write_bytes(png[:-12] + late + png[-12:])  # before IEND
    with Image.open(tmp_path / "late.png") as opened:
        assert "exif" not in opened.info  # not in the header
    out = load(tmp_path / "late.png", (20, 40)).astype(int)
    assert tuple(out[2, 2]) == RED and tuple(out[17, 37]) == WHITE


def test_gif_gives_its_first_frame_and_grayscale_one_channel(tmp_path: Path) -> None:
    frames = [solid((6, 6), RED), solid((6, 6), GREEN)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    out = load(tmp_path / "anim.gif", (6, 6))
    assert tuple(out[3, 3]) == RED
    grey = load(tmp_path / "anim.gif", (6, 6), "grayscale")
    assert grey.shape == (6, 6, 1) and grey[3, 3, 0] == 76  # ITU-R 601 luma of pure red


# -- the recipe: geometry ------------------------------------------------------------------------


def halves(tmp_path: Path) -> Path:
    """40 wide, 20 tall: the left half red, the right half blue."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = RED
    pixels[:, 20:] = BLUE
    Image.fromarray(pixels).save(tmp_path / "halves.png")
    return tmp_path / "halves.png"


def test_squash_stretches_the_whole_picture(tmp_path: Path) -> None:
    out = load(halves(tmp_path), (10, 10))
    assert tuple(out[0, 0]) == RED and tuple(out[9, 9]) == BLUE
    assert tuple(out[0, 3]) == RED and tuple(out[0, 6]) == BLUE
    assert out[0, 4, 0] > out[0, 4, 2] and out[0, 5, 2] > out[0, 5, 0]  # the seam is mid-way


def test_crop_keeps_the_centre(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:] = GREEN  # green side bands, outside the centred 20x20 square
    pixels[:, 10:30] = RED
    Image.fromarray(pixels).save(tmp_path / "bands.png")
    out = load(tmp_path / "bands.png", (10, 10), resize="crop").astype(int)
    assert (out[:, :, 0] > 200).all() and (out[:, :, 1] < 40).all()  # no green: cropped away
    squashed = load(tmp_path / "bands.png", (10, 10)).astype(int)
    assert squashed[5, 0, 1] > 200  # the same picture squashed keeps the green


def test_pad_fits_inside_on_the_mean_edge_colour(tmp_path: Path) -> None:
    out = load(halves(tmp_path), (10, 10), resize="pad").astype(int)
    assert tuple(out[5, 0]) == RED and tuple(out[5, 9]) == BLUE  # the picture, not stretched
    # rows 0-1 and 8-9 are padding: the mean of the edge pixels, half red and half blue
    assert np.abs(out[0, 0] - (128, 0, 128)).max() <= 1
    assert np.array_equal(out[0], out[9]) and np.array_equal(out[1, 3], out[0, 0])
    tall = load(halves(tmp_path), (20, 10), resize="pad")
    assert tall.shape == (20, 10, 3)


def test_recipe_round_trips_and_refuses_nonsense(tmp_path: Path) -> None:
    recipe = Recipe((96, 64), "grayscale", "pad")
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.to_dict() == {"size": [96, 64], "color": "grayscale", "resize": "pad"}
    assert recipe.input_shape == (96, 64, 1)
    with pytest.raises(ConfigError, match="resize"):
        Recipe((8, 8), "rgb", "stretch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="color"):
        Recipe((8, 8), "hsv")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="image size"):
        Recipe((0, 8))
    with pytest.raises(ConfigError, match="expected size"):
        Recipe.from_dict({"size": 8})
    path = halves(tmp_path)
    applied = Recipe((10, 10)).apply(Image.open(path))
    assert applied.dtype == np.float32 and applied.max() == 1.0
    assert np.array_equal(applied * 255, Recipe((10, 10)).load(path).astype(np.float32))


def test_a_big_jpeg_is_drafted_to_the_same_result_every_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=90)
    recipe = Recipe((64, 64), "rgb", "crop")
    first = recipe.load(tmp_path / "big.jpg")
    assert np.array_equal(first, recipe.load((tmp_path / "big.jpg").read_bytes()))
    with open(tmp_path / "big.jpg", "rb") as handle:
        assert np.array_equal(first, recipe.load(handle))


# -- streaming -----------------------------------------------------------------------------------


def epoch(batches: FolderBatches) -> list[int]:
    seen: list[int] = []
    for index in range(len(batches)):
        x, y = batches[index]
        assert x.dtype == np.float32 and y.dtype == np.int32 and len(x) == len(y)
        seen += indices(x)
    batches.on_epoch_end()
    return seen


def test_every_file_once_per_epoch_reshuffled_by_seed_and_resumable(tmp_path: Path) -> None:
    data = scan(numbered(tmp_path / "data", 50), validation_fraction=0, test_fraction=0)
    recipe = Recipe((8, 8), "grayscale")

    def batches(**kwargs: object) -> FolderBatches:
        return FolderBatches(data.train, recipe, 8, shuffle=True, **kwargs)  # type: ignore[arg-type]

    run = batches(seed=3, threads=2)
    first, second = epoch(run), epoch(run)
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second
    again = batches(seed=3, threads=1)
    assert epoch(again) == first and epoch(again) == second
    assert epoch(batches(seed=3, skip_epochs=1)) == second
    assert epoch(batches(seed=4)) != first
    plain = FolderBatches(data.train, recipe, 8)
    assert epoch(plain) == epoch(plain) == sorted(range(50), key=lambda i: (i % 2, i))  # c0/, c1/


def test_labels_follow_their_files(tmp_path: Path) -> None:
    data = scan(numbered(tmp_path / "data", 30, classes=3), validation_fraction=0, test_fraction=0)
    batches = FolderBatches(data.train, Recipe((8, 8), "grayscale"), 7, shuffle=True, seed=0)
    for index in range(len(batches)):
        x, y = batches[index]
        assert [i % 3 for i in indices(x)] == y.tolist()


def test_unreadable_files_are_skipped_named_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = numbered(tmp_path / "data", 20)
    good = root / "c0" / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(good)
    truncated = root / "c0" / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # header intact
    empty = root / "c1" / "empty.png"
    empty.write_bytes(b"")
    huge = root / "c1" / "huge.png"
    solid((200, 200), 0, "L").save(huge)
    data = scan(root, validation_fraction=0, test_fraction=0)
    assert inspect(data).problems.keys() == {str(empty)}  # a truncated body passes the header

    caplog.set_level(logging.WARNING, logger="cnnlab.data.folders")
    batches = FolderBatches(
        data.train, Recipe((8, 8), "grayscale"), 6, shuffle=True, seed=0, max_pixels=10_000
    )
    sizes = [sum(len(batches[i][1]) for i in range(len(batches))) for _ in range(2)]
    assert sizes == [21, 21]  # 20 numbered + the good photo, both epochs
    assert set(batches.skipped) == {str(truncated), str(empty), str(huge)}
    assert "truncated or corrupt" in batches.skipped[str(truncated)]
    assert "empty" in batches.skipped[str(empty)]
    assert "decompression-bomb" in batches.skipped[str(huge)]
    named = [r.getMessage() for r in caplog.records if "truncated.jpg" in r.getMessage()]
    assert len(named) == 1  # named once over two epochs


def test_a_batch_of_only_unreadable_files_takes_the_next_readable_one(tmp_path: Path) -> None:
    root = numbered(tmp_path / "data", 4)
    (root / "c0" / "!bad1.png").write_bytes(b"junk")
    (root / "c0" / "!bad2.png").write_bytes(b"junk")
    data = scan(root, validation_fraction=0, test_fraction=0)
    batches = FolderBatches(data.train, Recipe((8, 8), "grayscale"), 2)
    x, _ = batches[0]  # the two bad files sort first: c0/!bad1, c0/!bad2
    assert indices(x) == [0]  # c0/000.png, the next in the order
    assert [len(batches[i][1]) for i in range(len(batches))] == [1, 2, 2]


def test_memory_holds_a_batch_not_the_folder(tmp_path: Path) -> None:
    for index in range(300):
        folder = tmp_path / f"c{index % 3}"
        folder.mkdir(exist_ok=True)
        solid((48, 40), (index % 256, 10, 20)).save(folder / f"{index:03d}.png")
    data = scan(tmp_path, validation_fraction=0, test_fraction=0)
    recipe = Recipe((32, 32), "rgb")
    batch_bytes = 16 * 32 * 32 * 3 * 4

    def peak(cache: str | None) -> int:
        batches = FolderBatches(
            data.train, recipe, 16, shuffle=True, seed=0, threads=2, cache=cache
        )
        tracemalloc.start()
        try:
            for index in range(len(batches)):
                x, y = batches[index]
                del x, y
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            batches.close()

    streamed = peak(None)
    assert streamed < 3 * batch_bytes, streamed
    assert peak("memory") > 4 * batch_bytes  # the check can fail: caching keeps every picture


def test_disk_cache_serves_a_second_run_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = scan(numbered(tmp_path / "data", 20), validation_fraction=0, test_fraction=0)
    recipe = Recipe((8, 8), "grayscale")
    first = FolderBatches(data.train, recipe, 5, shuffle=True, seed=1, cache=tmp_path / "cache")
    before = epoch(first)

    def no_decoding(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(Recipe, "load", no_decoding)
    second = FolderBatches(data.train, recipe, 5, shuffle=True, seed=1, cache=tmp_path / "cache")
    assert epoch(second) == before


def test_stream_is_a_keras_dataset_that_fit_takes(tmp_path: Path) -> None:
    from cnnlab._backend import keras as _keras

    keras = _keras()
    data = scan(numbered(tmp_path / "data", 24), validation_fraction=0, test_fraction=0)
    dataset = stream(data.train, Recipe((8, 8), "rgb"), 8, shuffle=True, seed=0, workers=2)
    assert isinstance(dataset, keras.utils.PyDataset) and isinstance(dataset, FolderBatches)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2
    dataset.close()


@pytest.mark.parametrize("resize", ["squash", "crop", "pad"])
@pytest.mark.parametrize("color", ["rgb", "grayscale"])
def test_drafting_a_jpeg_changes_little_but_the_speed(
    tmp_path: Path, resize: str, color: str
) -> None:
    ys, xs = np.mgrid[0:600, 0:900]
    photo = np.stack([xs * 255 // 900, ys * 255 // 600, (xs + ys) * 255 // 1500], -1)
    photo[200:400, 300:500] = (255, 255, 0)  # a yellow block: misplaced if the geometry is off
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "photo.jpg", quality=92)
    recipe = Recipe((48, 64), color, resize)  # type: ignore[arg-type]
    drafted = recipe.load(tmp_path / "photo.jpg").astype(int)
    with Image.open(tmp_path / "photo.jpg") as image:
        image.load()  # decoded in full: no draft any more
        full = recipe.pixels(image).astype(int)
        assert image.size == (900, 600)
    assert drafted.shape == full.shape == (48, 64, recipe.channels)
    assert np.abs(drafted - full).mean() < 2


def test_a_class_left_without_training_images_is_an_error(root: Path) -> None:
    write_classes(root, {"many": 30, "one": 1})
    with pytest.raises(DataError, match="one: too few images"):
        scan(root, test_fraction=0.5, validation_fraction=0)


def test_without_drops_what_inspection_found_unreadable(root: Path) -> None:
    write_classes(root, {"a": 3, "b": 3})
    (root / "b" / "broken.png").write_bytes(b"")
    data = scan(root, validation_fraction=0, test_fraction=0)
    kept = data.train.without(inspect(data).problems)
    assert len(data.train) == 7 and len(kept) == 6
    assert root / "b" / "broken.png" not in kept.paths
    assert kept.labels.tolist() == [0, 0, 0, 1, 1, 1]


def load_signs_module() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "signs.py"
    spec = importlib.util.spec_from_file_location("signs_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_signs_folder_is_seeded_mixed_and_streams_whole(tmp_path: Path) -> None:
    signs = load_signs_module()
    signs.make_signs(tmp_path / "a", 64, seed=1, layout="splits")
    signs.make_signs(tmp_path / "b", 64, seed=1, layout="splits")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 64
    assert all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files
    )

    data = scan(tmp_path / "a", validation_fraction=0)
    assert (
        data.class_names == tuple(sorted(signs.CLASSES))
        and len(data.test) == 16
        and len(data.train) == 48
    )
    found = inspect(data)
    assert not found.problems
    assert {"RGB", "RGBA", "P"} <= set(found.modes) and {"JPEG", "PNG", "WEBP"} <= set(
        found.formats
    )
    assert choose_color(found) == "rgb"
    batches = FolderBatches(data.train, Recipe((32, 32)), 16, shuffle=True, seed=0)
    assert sum(len(batches[i][1]) for i in range(len(batches))) == 48 and not batches.skipped


def test_processes_decode_only_their_part_of_every_batch(tmp_path: Path) -> None:
    """Data-parallel training: each process decodes its own slice of every global batch, the
    slices together are the batch (cut to a multiple of the devices), and an unreadable
    picture is replaced so that every slice keeps its size."""
    from signs import make_signs

    root = tmp_path / "signs"
    make_signs(root, count=40, seed=4)
    split = scan(root, validation_fraction=0.0).train
    recipe = Recipe((16, 16), "rgb", "squash")
    whole = FolderBatches(split, recipe, 8, shuffle=True, seed=2)
    parts = [FolderBatches(split, recipe, 8, shuffle=True, seed=2) for _ in range(2)]
    for index, part in enumerate(parts):
        part.take_part(index, 2, 2)
    assert len(parts[0]) == len(parts[1]) == len(whole) - (len(split) % 8 == 1)
    for batch in range(len(parts[0])):
        x, y = whole[batch]
        usable = len(y) - len(y) % 2
        (x0, y0), (x1, y1) = parts[0][batch], parts[1][batch]
        assert len(y0) == len(y1) == usable // 2
        np.testing.assert_array_equal(np.concatenate([x0, x1]), x[:usable])
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y[:usable])
    broken = split.paths[int(parts[0].order[0])]
    broken.write_bytes(b"")  # the first picture of process 0's first slice
    for part in parts:
        part.skipped.clear()
    (x0, y0), (x1, y1) = parts[0][0], parts[1][0]
    assert len(y0) == len(y1) and os.fspath(broken) in parts[0].skipped
    with pytest.raises(ConfigError):
        parts[0].take_part(2, 2, 2)


def test_cnnlab_runs_inside_the_picture_folder_are_not_classes(tmp_path: Path) -> None:
    """`cnnlab train --dataset .` run from inside the folder writes runs/ there; its run
    folders (with PNG pictures in them) must not become a class or class pictures."""
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        for i in range(3):
            solid((20, 20), (40 * i, 80, 0)).save(tmp_path / name / f"{i}.png")
    run = tmp_path / "runs" / "photo_cnn-x"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    solid((20, 20), RED).save(run / "history.png")
    nested = tmp_path / "cats" / "old-run"  # a run folder inside a class folder
    nested.mkdir()
    (nested / "run.json").write_text("{}")
    solid((20, 20), RED).save(nested / "features.png")
    dataset = scan(tmp_path, validation_fraction=0.0, test_fraction=0.0)
    assert dataset.class_names == ("cats", "dogs")
    assert all("run" not in path.as_posix().split("/")[-2] for path in dataset.paths)
    assert len(dataset.paths) == 6
