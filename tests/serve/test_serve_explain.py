"""POST /api/explain/cell: one feature-map cell's arithmetic for an uploaded picture, over the
tiny run (Conv2D 3x3 'valid' with relu, then MaxPooling2D 2x2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import png_bytes

from cnnlab.prediction.arithmetic import explain_cell
from cnnlab.serve.service import ModelService

Images = list[tuple[str, np.ndarray]]
ROUTE = "/api/explain/cell"


def ask(client: TestClient, array: np.ndarray, **cell: Any) -> Any:
    return client.post(ROUTE, params=cell, files={"file": ("x.png", png_bytes(array), "image/png")})


def test_a_conv_cell_adds_up_and_equals_the_library(
    client: TestClient, app: Any, images: Images
) -> None:
    _, array = images[2]
    response = ask(client, array, layer="conv2d", row=3, col=25, channel=2)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["kind"] == "Conv2D" and answer["previous"] == "input"
    assert answer["previous_shape"] == [28, 28, 1]
    assert answer["rows"] == [3, 6] and answer["cols"] == [25, 28]  # 'valid': no padding
    assert not np.array(answer["padding"]).any()
    (channel,) = answer["inputs"]
    products = np.array(channel["patch"]) * np.array(channel["kernel"])
    assert np.allclose(products, channel["products"])
    assert answer["total"] == pytest.approx(products.sum() + answer["bias"])
    assert answer["activation"] == "relu" and answer["value"] == max(answer["total"], 0.0)
    assert answer["agrees"] and abs(answer["value"] - answer["keras_value"]) <= answer["tolerance"]
    assert "sum of input x kernel over the 3x3 window" in answer["explanation"]
    # the same numbers as the library's, for the input the predictor prepares
    service: ModelService = app.state.service
    (prepared,) = service.predictor.prepare([png_bytes(array)])
    with service.predictor.model_lock:
        own = explain_cell(service.model, prepared.model_input, "conv2d", 3, 25, 2)
    assert answer == own.to_dict()


def test_a_pooling_cell_shows_its_window_and_maximum(client: TestClient, images: Images) -> None:
    _, array = images[0]
    answer = ask(client, array, layer="max_pooling2d", row=12, col=0, channel=3).json()
    assert answer["operation"] == "max" and answer["previous"] == "conv2d"
    assert answer["rows"] == [24, 26] and answer["cols"] == [0, 2]
    assert answer["value"] == max(max(row) for row in answer["window"])
    assert answer["agrees"] and "inputs" not in answer and "bias" not in answer


def test_the_route_is_in_the_openapi_spec(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    route = spec["paths"][ROUTE]["post"]
    schema = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/CellArithmeticOut"}
    assert {"layer", "row", "col", "channel"} <= {p["name"] for p in route["parameters"]}
    assert {"404", "422", "501"} <= set(route["responses"])


@pytest.mark.parametrize(
    ("cell", "code", "words"),
    [
        ({"layer": "nope", "row": 0, "col": 0, "channel": 0}, 404, "no layer 'nope'"),
        ({"layer": "dense", "row": 0, "col": 0, "channel": 0}, 422, "is a Dense layer"),
        ({"layer": "conv2d", "row": 26, "col": 0, "channel": 0}, 422, "outside conv2d's"),
        ({"layer": "conv2d", "row": 0, "col": 0, "channel": 4}, 422, "outside conv2d's"),
        ({"layer": "conv2d", "row": -1, "col": 0, "channel": 0}, 422, "row"),
        ({"layer": "conv2d", "row": 0, "col": 0}, 422, "channel"),
    ],
)
def test_bad_cells_get_a_one_line_4xx(
    client: TestClient, images: Images, cell: dict[str, Any], code: int, words: str
) -> None:
    response = ask(client, images[0][1], **cell)
    assert response.status_code == code
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail


def test_a_bad_picture_is_a_422(client: TestClient) -> None:
    response = client.post(
        ROUTE,
        params={"layer": "conv2d", "row": 0, "col": 0, "channel": 0},
        files={"file": ("x.png", b"not a picture", "image/png")},
    )
    assert response.status_code in (415, 422) and "\n" not in response.json()["detail"]


def test_an_exported_model_answers_501(
    client: TestClient, app: Any, images: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state.service, "predictor", object())  # not a KerasPredictor
    response = ask(client, images[0][1], layer="conv2d", row=0, col=0, channel=0)
    assert response.status_code == 501 and "ONNX" in response.json()["detail"]


def test_a_colour_model_sums_its_three_input_channels(colour_client: TestClient) -> None:
    """The colour run's 'same' conv over RGB at a corner: three input channels, each read with
    zero padding outside the picture; a GlobalAveragePooling2D is not a windowed pooling."""
    picture = np.zeros((16, 16, 3), np.uint8)
    picture[:, :, 1] = 200
    answer = ask(colour_client, picture, layer="conv", row=15, col=0, channel=1).json()
    assert [item["channel"] for item in answer["inputs"]] == [0, 1, 2]
    assert answer["rows"] == [14, 17] and answer["cols"] == [-1, 2]
    padding = np.array(answer["padding"])
    assert padding[2].all() and padding[:, 0].all() and padding.sum() == 5
    sums = sum(item["sum"] for item in answer["inputs"])
    assert answer["total"] == pytest.approx(sums + answer["bias"])
    assert answer["agrees"]
    refused = ask(colour_client, picture, layer="pool", row=0, col=0, channel=0)
    assert refused.status_code == 422 and "GlobalAveragePooling2D" in refused.json()["detail"]
