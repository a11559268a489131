"""The shapes of the API's requests and answers: they validate, serialise and document /docs.

Answers are pydantic models; the request bodies are described by hand, since one route takes
a multipart file, raw image bytes or JSON pixels (`cnnlab.serve.inputs` parses them).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from cnnlab._version import __version__

# --- Response shapes (they document /docs) -------------------------------------------------


class ClassProbability(BaseModel):
    class_name: str = Field(serialization_alias="class", examples=["Sneaker"])
    probability: float = Field(ge=0, le=1, examples=[0.93])


class PredictionOut(BaseModel):
    source: str = Field(description="the file name, 'body' or 'pixels'")
    label: str | None = Field(description="the most probable class")
    top: list[ClassProbability]
    blank: bool = Field(
        description="the model's input is all zeros (garment recipe: nothing "
        "stood out from the background)"
    )
    box: list[int] | None = Field(
        None,
        description="garment recipe: where the object was found in the uploaded picture: "
        "[left, top, right, bottom] in its pixels (right and bottom exclusive); null for pixels, "
        "a blank picture, or a model with a folder recipe (the whole picture is used)",
        examples=[[52, 40, 190, 236]],
    )
    unsure: bool | None = Field(
        default=None,
        description="the highest probability, after the temperature `cnnlab evaluate` fitted, "
        "is below the threshold it chose on validation data (at most 5% of validation images "
        "fall below): maybe not one of the model's classes; null where the run is not evaluated",
    )


class BatchItem(BaseModel):
    source: str
    label: str | None = None
    top: list[ClassProbability] = []
    box: list[int] | None = Field(
        default=None, description="where the object was found, as in predict"
    )
    unsure: bool | None = Field(default=None, description="a low-confidence answer, as in predict")
    error: str | None = Field(None, description="why this file was not predicted")
    status: int | None = Field(None, description="the HTTP status the error would have alone")


class BatchOut(BaseModel):
    predictions: list[BatchItem]


class Picture(BaseModel):
    name: str
    kind: str = Field(description="the Keras layer class, or 'input'")
    shape: list[int] = Field(description="height, width, channels")
    columns: int = Field(description="tiles per row in the image (one tile per channel)")
    shown_channels: int
    image: str = Field(description="a data: URL of a PNG")


class FeaturesOut(BaseModel):
    prediction: PredictionOut
    input: Picture = Field(
        description="the preprocessed input the model received, as a PNG in colour for a "
        "colour (RGB) model, grey otherwise; garment recipe: the found box's (a photo's answer "
        "is the mean over it and its re-framings, cnnlab.prediction.preprocess.FRAMINGS)"
    )
    pixels: list[list[float]] | None = Field(
        description="that input's values in [0, 1], row by row, where the model reads one "
        "grey level per pixel (its first channel for a garment model that repeats grey); null "
        "for a colour recipe: its input is the `input` PNG"
    )
    layers: list[Picture] = Field(description="each conv and pooling layer's output")


class InputChannelArithmetic(BaseModel):
    channel: int = Field(description="the input channel (a channel of the previous layer's map)")
    patch: list[list[float]] = Field(description="the input values under the kernel; 0 in padding")
    kernel: list[list[float]] = Field(description="the kernel slice for this input channel")
    products: list[list[float]] = Field(description="patch x kernel, position by position")
    sum: float = Field(description="this input channel's share: its products added up")


class CellArithmeticOut(BaseModel):
    """One feature-map cell's arithmetic, from the layer's real input (see
    `cnnlab.prediction.arithmetic`); conv fields or pooling fields, as the layer is."""

    layer: str
    kind: str = Field(description="Conv2D, MaxPooling2D or AveragePooling2D")
    row: int
    col: int
    channel: int
    explanation: str = Field(description="the rule this cell follows, in one sentence")
    previous: str = Field(description="the layer this one read ('input': the model's input)")
    previous_shape: list[int] = Field(description="height, width, channels of what it read")
    rows: list[int] = Field(
        description="[start, stop) of the window's rows in the previous map; below 0 or past "
        "its height where 'same' padding adds zeros"
    )
    cols: list[int] = Field(description="[start, stop) of the window's columns, likewise")
    padding: list[list[bool]] = Field(description="true where the window is outside the map")
    total: float = Field(
        description="conv: the products' sum plus the bias, before the activation; pooling: the "
        "max or mean"
    )
    value: float = Field(description="this arithmetic's result for the cell")
    keras_value: float = Field(description="what Keras computed for the cell (the layer's output)")
    tolerance: float = Field(
        description="how far value and keras_value may differ: float32 sums in another order "
        "(1e-5 of the terms' size), or a bfloat16 model's rounding"
    )
    agrees: bool = Field(description="value equals keras_value to the tolerance")
    dtype: str = Field(description="the layer's compute dtype (bfloat16 in a mixed model)")
    activation: str | None = Field(None, description="conv: the activation ('linear': none)")
    bias: float | None = Field(None, description="conv: the output channel's bias")
    inputs: list[InputChannelArithmetic] | None = Field(None, description="conv: per channel")
    operation: str | None = Field(None, description="pooling: max or mean")
    window: list[list[float | None]] | None = Field(
        None, description="pooling: the window in this channel; null where padding is left out"
    )


class LayerInfo(BaseModel):
    name: str
    type: str
    output_shape: list[int | None] | None
    parameters: int


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_batch_files: int


class InputInfo(BaseModel):
    kind: str = Field(
        description="folder: pictures are prepared with the run's recorded recipe (the whole "
        "picture, upright, in its colour, resized as the training images were); garment: the "
        "Fashion-MNIST recipe (the object found, cropped, made light-on-dark grey and fitted)",
        examples=["folder"],
    )
    size: list[int] = Field(description="height, width of the model's input", examples=[[64, 64]])
    color: str = Field(description="rgb or grayscale", examples=["rgb"])
    resize: str | None = Field(
        description="squash, crop or pad (folder recipe); null for the garment recipe",
        examples=["squash"],
    )
    drawing: bool = Field(
        description="whether a drawing (light strokes on black) is a sensible input: the "
        "garment recipe, or a one-channel model"
    )


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    run: str
    backend: str = Field("keras", description="keras, or onnxruntime for an exported model")
    features: bool = Field(True, description="whether /api/features (needs Keras) is available")
    keep_size: bool = Field(
        False, description="whether pictures are predicted at their own size unless asked not to"
    )
    classes: list[str] = Field(description="the class names, in the model's output order")
    input: InputInfo = Field(description="how a picture becomes the model's input")
    input_shape: list[int | None]
    parameters: int | None
    layers: list[LayerInfo]
    top_k: int
    limits: Limits
    metrics: dict[str, Any] | None = Field(description="metrics.json, once evaluated")
    training: dict[str, Any] | None = Field(description="status and best epoch from run.json")
    mistakes: bool = Field(
        False,
        description="whether `cnnlab evaluate` recorded each test image's outcome, so "
        "/api/mistakes and /api/top-losses answer",
    )


class OutcomeOut(BaseModel):
    index: int = Field(
        description="the image's row in the run's test split (an image folder's: its file's "
        "place in the split's sorted list of files)"
    )
    path: str | None = Field(
        None, description="an image folder's picture, relative to the folder; null for arrays"
    )
    true: str = Field(description="its class", examples=["Shirt"])
    predicted: str = Field(description="the model's most probable class", examples=["T-shirt/top"])
    probability: float = Field(ge=0, le=1, description="the predicted class's probability")
    true_probability: float = Field(ge=0, le=1, description="the true class's probability")
    loss: float = Field(ge=0, description="-log of the true class's probability (clipped at 1e-7)")
    top: list[ClassProbability] = Field(description="the most probable classes")
    image: str = Field(
        description="a data: URL of a PNG of the picture as the model saw it (its input's "
        "pixels; one larger than 128 pixels a side shrunk to fit 128)"
    )


class OutcomesOut(BaseModel):
    true: str | None = Field(description="the confusion-matrix cell's true class; null: any")
    predicted: str | None = Field(description="the cell's predicted class; null: any")
    count: int = Field(
        description="how many test images the list is chosen from: the cell's count, or every "
        "test image for the top losses"
    )
    images: list[OutcomeOut] = Field(
        description="the first `limit` of them (as `cnnlab evaluate` recorded them: "
        "probabilities kept to float16): a cell's mistakes the most confident first, a "
        "diagonal cell's correct ones the least sure first, the top losses highest loss first"
    )


class Health(BaseModel):
    status: str = "ok"
    model: str
    version: str = __version__


# --- Request bodies (documented by hand: one route takes a file, raw bytes or JSON) ----------

PIXELS_SCHEMA = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
    "description": "the model's input size in rows of grey values in [0, 1] (28x28 for "
    "Fashion-MNIST, light on dark; see /api/model's input); a colour model takes them as grey",
}
IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "oneOf": [
                        PIXELS_SCHEMA,
                        {
                            "type": "object",
                            "properties": {"pixels": PIXELS_SCHEMA},
                            "required": ["pixels"],
                        },
                    ]
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": "..."}}}}
    for code, text in {
        400: "empty body or file, or malformed JSON",
        413: "over the upload size or pixel limit",
        415: "not an image, or an unsupported content type",
        422: "wrong pixel array, or a truncated image",
    }.items()
}
TopK = Annotated[
    int | None,
    Query(ge=1, le=1000, description="how many classes to return (default: the server's top_k, 3)"),
]
CellLayer = Annotated[str, Query(description="a Conv2D or pooling layer's name (see /api/model)")]
CellRow = Annotated[int, Query(ge=0, description="the output row, from 0 at the top")]
CellCol = Annotated[int, Query(ge=0, description="the output column, from 0 at the left")]
CellChannel = Annotated[int, Query(ge=0, description="the output channel (filter), from 0")]
KeepSize = Annotated[
    bool | None,
    Query(
        description="a fully convolutional model sees the whole picture at its own size "
        "(sides 28 to 1024 pixels) instead of the object fitted to 28x28 (default: the "
        "server's --keep-size)"
    ),
]
MISTAKES_LIMIT = 24
Limit = Annotated[
    int,
    Query(ge=1, le=500, description="how many test images to return at most (highest loss first)"),
]
CellClass = Annotated[
    str, Query(description="a class name, or its index (0 = the first class)", examples=["Shirt"])
]
MISTAKE_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": "..."}}}}
    for code, text in {
        404: "no class of that name, or no test predictions recorded (run `cnnlab evaluate`)",
        409: "the run's test images cannot be read (the dataset moved or changed)",
    }.items()
}
