"""Architecture pictures: visualkeras' layered view, with a legend and every layer's output shape.

Each layer is a box (height and width from its spatial size, depth from its channels), coloured by
layer type; the legend names the types and each box carries its output shape, e.g. `14x14x64`.

visualkeras workarounds
-----------------------
visualkeras 0.2.0 was written for Keras 2; with Keras 3 and Pillow >= 10 cnnlab works around it
here, without patching it:

- Keras 3 layers have no `output_shape` attribute, and `layered_view` reads it for every layer
  (`AttributeError: 'Conv2D' object has no attribute 'output_shape'`, for Sequential and functional
  models alike). We hand it stand-ins that carry the layer's name and `output.shape`; each
  stand-in's class is named after the Keras class, so colours and legend entries stay per type.
- Its `LAYERED_TEXT_CALLABLES["name_shape"]` caption reads the same attribute and writes
  `shape: ?`; we pass our own caption (the shape, alternately above and below the boxes so
  neighbouring captions do not overlap).
- `show_dimension=True` puts shapes in the legend as Python lists, one entry per layer
  (`Conv2D(['28', '28', '64'])`); we leave it off and caption the boxes instead.
- `legend_text_spacing_offset` defaults to 15 but warns that it is deprecated whenever it is not
  0; we pass 0.
- Its default font is Pillow's 10 px one; we pass `ImageFont.load_default(size=...)` (Pillow >= 10.1
  ships a scalable default font, so no TrueType font need be installed), or the fixed bitmap font
  on older Pillow.
- Captions above the tallest box touch the image's top edge; we add a white margin.
- Functional models: `model.layers` starts with the `InputLayer`, which we skip, as Sequential
  models do. A model with branches is drawn as a chain in layer order, which hides its
  connections, so the picture says so in a note under it.

(Pillow 10 removed `ImageFont.getsize`; visualkeras 0.2.0 already falls back to `getbbox`.)
"""

from __future__ import annotations

from math import ceil
from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    import keras
    from PIL import Image, ImageFont

FONT_SIZE = 14
MARGIN = 12
CAPTION_GAP = 16
# visualkeras' own defaults, named because the caption spacing depends on them.
SPACING = 10
SCALE_Z = 1.5
MIN_Z = 20
MAX_Z = 400
BRANCHED_NOTE = (
    "Note: this model has branches; layers are drawn in order and connections are not shown."
)


def draw_model(
    model: keras.Model, *, scale_xy: float = 4, legend: bool = True, shapes: bool = True
) -> Image.Image:
    """Draw `model` as visualkeras' layered view, titled, with a legend and output shapes."""
    import visualkeras
    from PIL import ImageOps

    if not model.built:
        raise CnnlabError(
            f"model {model.name!r} has no input shape yet; build it (e.g. with keras.Input) first"
        )
    layers = _drawn_layers(model)
    stand_in = _StandInModel(layers)
    font = _font(FONT_SIZE)
    spacing = _caption_spacing(stand_in.layers, font) if shapes else SPACING
    drawing = visualkeras.layered_view(
        stand_in,
        scale_xy=scale_xy,
        scale_z=SCALE_Z,
        min_z=MIN_Z,
        max_z=MAX_Z,
        spacing=spacing,
        legend=legend,
        legend_text_spacing_offset=0,
        font=font,
        text_callable=_shape_caption if shapes else None,
    ).convert("RGB")
    drawing = ImageOps.expand(drawing, border=MARGIN, fill="white")
    title = f"{model.name}: {model.count_params():,} parameters"
    notes = [] if _is_chain(model, layers) else [BRANCHED_NOTE]
    return _with_text(drawing, title, notes)


def _shape_caption(index: int, layer: Any) -> tuple[str, bool]:
    """visualkeras caption: the output shape without the batch axis; even layers above."""
    return format_shape(layer.output_shape), index % 2 == 0


def format_shape(shape: tuple[int | None, ...] | None) -> str:
    """A layer output shape without its batch axis, as `28x28x64` (`?` where unknown)."""
    if shape is None:
        return "?"
    return "x".join("?" if size is None else str(size) for size in shape[1:])


def _drawn_layers(model: keras.Model) -> list[Any]:
    """The model's layers without its `InputLayer`s (Sequential models list none)."""
    from cnnlab._backend import keras as _keras

    input_layer = _keras().layers.InputLayer
    return [layer for layer in model.layers if not isinstance(layer, input_layer)]


def _caption_spacing(layers: list[Any], font: Any) -> int:
    """Gap between boxes wide enough that captions on the same side do not overlap.

    Captions alternate above and below, so each must clear the one two boxes along.
    """
    widths = [_text_width(font, format_shape(layer.output_shape)) for layer in layers]
    depths = [_box_depth(layer.output_shape) for layer in layers]
    needed = [
        # Centres two boxes apart are d0/2 + s + d1 + s + d2/2 apart (s: the spacing).
        ((w0 + w2) / 2 + CAPTION_GAP - d0 / 2 - d1 - d2 / 2) / 2
        for w0, w2, d0, d1, d2 in zip(
            widths, widths[2:], depths, depths[1:], depths[2:], strict=False
        )
    ]
    return max(SPACING, ceil(max(needed, default=0)))


def _box_depth(shape: tuple[int | None, ...] | None) -> float:
    """How deep visualkeras draws a layer (its channels, scaled and clamped), in pixels."""
    channels = shape[-1] if shape and shape[-1] else 1
    return min(max(channels * SCALE_Z, MIN_Z), MAX_Z)


class _StandInModel:
    """What `layered_view` reads of a model: its layers, each with `name` and `output_shape`."""

    def __init__(self, layers: list[Any]) -> None:
        classes: dict[type, type] = {}
        self.layers: list[Any] = []
        for layer in layers:
            keras_class = type(layer)
            if keras_class not in classes:
                classes[keras_class] = type(keras_class.__name__, (), {})
            cls = classes[keras_class]
            stand_in = cls()
            stand_in.name = layer.name
            stand_in.output_shape = _output_shape(layer)
            self.layers.append(stand_in)


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    """The layer's (first) output shape, or None where Keras cannot say (e.g. shared layers)."""
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    if isinstance(output, list | tuple):
        output = output[0]
    return tuple(output.shape)


def _is_chain(model: keras.Model, layers: list[Any]) -> bool:
    """Whether every layer takes exactly one tensor and the model has one input and output."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return False
    for layer in layers:
        try:
            inputs = layer.input
        except (AttributeError, ValueError):  # a shared layer: called more than once
            return False
        if isinstance(inputs, list | tuple | dict) and len(inputs) != 1:
            return False
    return True


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` px (Pillow >= 10.1), else its fixed bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # older Pillow, or Pillow built without FreeType
        return ImageFont.load_default()


def _with_text(drawing: Image.Image, title: str, notes: list[str]) -> Image.Image:
    """`drawing` with `title` centred above it and `notes` left-aligned below it."""
    from PIL import Image, ImageDraw

    title_font, note_font = _font(FONT_SIZE + 4), _font(FONT_SIZE)
    line = FONT_SIZE + 8
    title_height = 2 * line
    text_width = max(
        _text_width(f, t) for f, t in [(title_font, title), *((note_font, n) for n in notes)]
    )
    width = max(drawing.width, text_width + 2 * MARGIN)
    height = title_height + drawing.height + line * len(notes) + (MARGIN if notes else 0)
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(drawing, ((width - drawing.width) // 2, title_height))
    pen = ImageDraw.Draw(canvas)
    pen.text((width // 2, title_height // 2), title, font=title_font, fill="black", anchor="mm")
    for i, note in enumerate(notes):
        pen.text(
            (MARGIN, title_height + drawing.height + i * line), note, font=note_font, fill="black"
        )
    return canvas


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)
