"""A tiny colour run written by hand, as a folder-trained run looks: no training needed.

The model reads 16x16 RGB pictures and its weights are set, not learned: one conv filter per
colour channel (the pixel itself), global average pooling and a Dense layer that favours the
strongest channel. So it answers "red" for a red picture, "green" for a green one, "blue" for a
blue one, and a wrong input recipe (grey, negated, cropped) shows as a wrong answer.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.data.folders import Recipe
from cnnlab.runs import Run, RunState

COLOUR_CLASSES = ("red", "green", "blue")
COLOUR_RECIPE = Recipe((16, 16), "rgb", "squash")
RGB = {"red": (220, 30, 40), "green": (30, 200, 60), "blue": (40, 50, 210)}


def colour_model():  # type: ignore[no-untyped-def]
    """Input(16, 16, 3) -> Conv2D(3, 3x3, identity) -> GlobalAveragePooling2D -> Dense(3)."""
    from cnnlab._backend import keras as _keras

    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(3, activation="softmax", name="classes"),
        ],
        name="colour_cnn",
    )
    kernel = np.zeros((3, 3, 3, 3), np.float32)
    for channel in range(3):
        kernel[1, 1, channel, channel] = 1.0
        kernel[0, 1, channel, channel] = 0.25  # a vertical edge, so the kernels differ in space
    model.get_layer("conv").set_weights([kernel, np.zeros(3, np.float32)])
    model.get_layer("classes").set_weights([np.eye(3, dtype=np.float32) * 12, np.zeros(3)])
    return model


def write_colour_run(directory: Path) -> Path:
    """A finished run folder of `colour_model` with its class names and folder recipe."""
    run = Run(directory)
    run.make_dir()
    colour_model().save(run.model_file)
    run.write_state(
        RunState(
            status="finished",
            dataset="colours/",
            class_names=list(COLOUR_CLASSES),
            input_shape=[16, 16, 3],
            input_recipe=COLOUR_RECIPE.to_dict(),
        )
    )
    return run.dir


def colour_picture(colour: str, size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    """An RGB picture of `size` (width, height): mostly `colour`, with a little noise and a
    pale corner (so a garment recipe would find an "object" and crop it)."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.empty((height, width, 3), np.int16)
    pixels[:] = RGB[colour]
    pixels += rng.integers(-12, 13, pixels.shape, dtype=np.int16)
    pixels[: height // 4, : width // 4] = 245
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encoded(picture: Image.Image, kind: str) -> bytes:
    """`picture` as a file of one kind: jpeg, png, rgba (PNG with transparency), palette."""
    buffer = io.BytesIO()
    if kind == "jpeg":
        picture.save(buffer, "JPEG", quality=90)
    elif kind == "png":
        picture.save(buffer, "PNG")
    elif kind == "rgba":
        rgba = picture.convert("RGBA")
        alpha = np.full((picture.height, picture.width), 255, np.uint8)
        alpha[-4:, -6:] = 0  # a transparent corner: composited on white
        rgba.putalpha(Image.fromarray(alpha))
        rgba.save(buffer, "PNG")
    elif kind == "palette":
        picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(buffer, "PNG")
    else:
        raise ValueError(kind)
    return buffer.getvalue()


FILE_KINDS = ("jpeg", "png", "rgba", "palette")


def write_pictures(folder: Path) -> dict[Path, str]:
    """One file of every kind per colour, of different sizes: path -> its colour."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, colour in enumerate(COLOUR_CLASSES):
        for number, kind in enumerate(FILE_KINDS):
            size = (24 + 9 * number + index, 20 + 5 * index)
            suffix = "jpg" if kind == "jpeg" else "png"
            path = folder / f"{colour}-{kind}.{suffix}"
            path.write_bytes(encoded(colour_picture(colour, size, seed=index * 10 + number), kind))
            written[path] = colour
    return written


MISLABELLED = {"red": ("green",), "green": ("blue", "blue")}
"""Test pictures filed under the wrong class (folder -> the colours they show): the colour
model calls them by their colour, so the confusion matrix gets off-diagonal cells."""


def write_colour_folder(folder: Path) -> Path:
    """An image folder of the three colours (train/ and test/, PNG files of a few sizes): 2
    training pictures per class; 3 test pictures per class that show it, and `MISLABELLED`."""
    for split, count in (("train", 2), ("test", 3)):
        for index, colour in enumerate(COLOUR_CLASSES):
            shown = [colour] * count + list(MISLABELLED.get(colour, ())) * (split == "test")
            (folder / split / colour).mkdir(parents=True, exist_ok=True)
            for number, looks in enumerate(shown):
                size = (20 + 7 * number, 18 + 5 * index)
                picture = colour_picture(looks, size, seed=10 * index + number)
                picture.save(folder / split / colour / f"{number:02d}-{looks}.png")
    return folder


def write_evaluated_colour_run(directory: Path, folder: Path) -> Path:
    """`write_colour_run` with a config.toml that names `folder` (`write_colour_folder`), then
    evaluated: a folder-trained run's metrics.json and test_predictions.npz, in a second."""
    from cnnlab.config import load_config
    from cnnlab.evaluation import evaluate

    run = Run(write_colour_run(directory))
    # A folder's classes are its sub-folders in sorted order (blue, green, red): the model's
    # outputs are turned to that order.
    names = sorted(COLOUR_CLASSES)
    model = colour_model()
    order = [COLOUR_CLASSES.index(name) for name in names]
    model.get_layer("classes").set_weights(
        [np.eye(3, dtype=np.float32)[:, order] * 12, np.zeros(3)]
    )
    model.save(run.model_file)
    state = run.state()
    state.class_names = names
    run.write_state(state)
    config = load_config(
        overrides={
            "data.dataset": str(folder),
            "data.image_size": "16",
            "data.color": "rgb",
            "data.resize": "squash",
            "data.validation_split": 0.0,
            "train.seed": 0,
            "run.runs_dir": str(directory.parent),
            "run.name": directory.name,
        }
    )
    run.write_config(config)
    evaluate(run.dir)
    return run.dir
