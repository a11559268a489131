"""The JSON API through FastAPI's TestClient: every route, and every bad request answered 4xx."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import LiveServer, png_bytes

from cnnlab.errors import CnnlabError
from cnnlab.prediction.inference import load_predictor
from cnnlab.serve import create_app, inputs

Images = list[tuple[str, np.ndarray]]


def pixels(array: np.ndarray) -> list[list[float]]:
    return (array.astype(np.float64) / 255).tolist()


def upload(data: bytes, name: str = "image.png", field: str = "file") -> dict[str, Any]:
    return {"files": {field: (name, data, "image/png")}}


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims `width` x `height` pixels (a decompression bomb)."""
    data = png_bytes(np.zeros((1, 1), np.uint8))
    header = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


def assert_still_serving(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"


# --- Routes ------------------------------------------------------------------------------


def test_predict_a_file_gives_the_top_classes(client: TestClient, images: Images) -> None:
    for label, array in images:
        response = client.post("/api/predict", **upload(png_bytes(array), f"{label}.png"))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["label"] == label and answer["source"] == f"{label}.png"
        assert len(answer["top"]) == 3 and answer["blank"] is False
        probabilities = [item["probability"] for item in answer["top"]]
        assert probabilities == sorted(probabilities, reverse=True)


@pytest.mark.parametrize("wrap", [False, True], ids=["array", "object"])
def test_predict_json_pixels_matches_the_library(
    client: TestClient, images: Images, tiny_run: Path, wrap: bool
) -> None:
    label, array = images[4]
    body = {"pixels": pixels(array)} if wrap else pixels(array)
    answer = client.post("/api/predict", json=body, params={"top_k": 4}).json()
    expected = load_predictor(tiny_run).predict([array.astype(np.float32) / 255], top_k=4)[0]
    assert answer["label"] == label == expected.label
    assert [item["class"] for item in answer["top"]] == [name for name, _ in expected.top]
    got = [item["probability"] for item in answer["top"]]
    assert got == pytest.approx([probability for _, probability in expected.top], abs=1e-6)


def test_predict_accepts_a_trailing_channel_axis_and_a_raw_image_body(
    client: TestClient, images: Images
) -> None:
    label, array = images[2]
    answer = client.post("/api/predict", json=pixels(array[:, :, None]))
    assert answer.json()["label"] == label
    raw = client.post(
        "/api/predict", content=png_bytes(array), headers={"content-type": "image/png"}
    )
    assert raw.status_code == 200 and raw.json()["label"] == label


def test_top_k_is_capped_at_the_number_of_classes(client: TestClient, images: Images) -> None:
    answer = client.post("/api/predict", json=pixels(images[0][1]), params={"top_k": 50}).json()
    assert len(answer["top"]) == 4
    assert sum(item["probability"] for item in answer["top"]) == pytest.approx(1, abs=1e-5)


def test_a_blank_picture_says_so(client: TestClient) -> None:
    answer = client.post("/api/predict", **upload(png_bytes(np.zeros((50, 50), np.uint8))))
    assert answer.status_code == 200 and answer.json()["blank"] is True


def test_batch_predicts_each_file_and_reports_bad_ones(client: TestClient, images: Images) -> None:
    files = [
        ("files", ("a.png", png_bytes(images[0][1]), "image/png")),
        ("files", ("notes.txt", b"not an image", "text/plain")),
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("cut.png", png_bytes(images[3][1])[:80], "image/png")),
        ("files", ("b.png", png_bytes(images[7][1]), "image/png")),
    ]
    response = client.post("/api/predict/batch", files=files, params={"top_k": 2})
    assert response.status_code == 200
    answers = response.json()["predictions"]
    assert [a["source"] for a in answers] == ["a.png", "notes.txt", "empty.png", "cut.png", "b.png"]
    assert [a["label"] for a in answers] == [images[0][0], None, None, None, images[7][0]]
    assert [a["status"] for a in answers] == [None, 415, 400, 422, None]
    assert all(a["error"] for a in answers[1:4]) and len(answers[0]["top"]) == 2


def test_features_show_every_conv_and_pooling_layer(client: TestClient, images: Images) -> None:
    label, array = images[6]
    response = client.post("/api/features", **upload(png_bytes(array)))
    assert response.status_code == 200
    answer = response.json()
    assert answer["prediction"]["label"] == label
    assert answer["input"]["shape"] == [28, 28, 1] and answer["input"]["kind"] == "input"
    model_input = np.array(answer["pixels"])
    assert model_input.shape == (28, 28) and 0 <= model_input.min() < model_input.max() <= 1
    layers = [(layer["name"], layer["kind"], layer["shape"]) for layer in answer["layers"]]
    assert layers == [
        ("conv2d", "Conv2D", [26, 26, 4]),
        ("max_pooling2d", "MaxPooling2D", [13, 13, 4]),
    ]
    for picture in [answer["input"], *answer["layers"]]:
        prefix = "data:image/png;base64,"
        assert picture["image"].startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(picture["image"][len(prefix) :])))
        height, width, channels = picture["shape"]
        columns = picture["columns"]
        rows = -(-channels // columns)
        assert image.size == (columns * (width + 1) - 1, rows * (height + 1) - 1)


def test_model_info(client: TestClient) -> None:
    info = client.get("/api/model").json()
    assert info["name"] == "tiny" and info["classes"] == ["top", "bottom", "left", "right"]
    assert info["input_shape"] == [28, 28, 1]
    assert info["parameters"] == sum(layer["parameters"] for layer in info["layers"]) > 0
    assert [layer["type"] for layer in info["layers"]] == [
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
    ]
    assert info["limits"]["max_upload_bytes"] == 10 * 2**20 and info["top_k"] == 3
    assert info["metrics"] is None  # not evaluated
    assert info["training"]["status"] == "finished" and info["training"]["best_epoch"] >= 1


def test_model_info_shows_test_metrics_once_evaluated(tiny_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    client = TestClient(create_app(run))
    assert client.get("/api/model").json()["metrics"] is None
    (run / "metrics.json").write_text('{"test_accuracy": 0.875, "test_loss": 0.3}')
    assert client.get("/api/model").json()["metrics"] == {"test_accuracy": 0.875, "test_loss": 0.3}


def test_summary_health_page_and_docs(client: TestClient) -> None:
    summary = client.get("/api/summary")
    assert summary.headers["content-type"].startswith("text/plain") and "tiny" in summary.text
    assert client.get("/api/health").json() == {"status": "ok", "model": "tiny", "version": "0.1.0"}
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html") and "<canvas" in page.text
    for asset, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from another host
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/predict/batch", "/api/features", "/api/model"} <= set(paths)
    assert "application/json" in paths["/api/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("name", ["model", "history"])
def test_pictures_are_pngs_made_once(client: TestClient, app: FastAPI, name: str) -> None:
    first = client.get(f"/api/pictures/{name}.png")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(first.content)).format == "PNG"
    assert client.get(f"/api/pictures/{name}.png").content is not None
    assert app.state.service.picture(name) is app.state.service.picture(name)  # cached


def test_missing_pictures_are_404(client: TestClient, tiny_run: Path, tmp_path: Path) -> None:
    assert client.get("/api/pictures/weights.png").status_code == 404
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_run / "model.keras", lone / "model.keras")  # a bare model: no history
    answer = TestClient(create_app(lone / "model.keras")).get("/api/pictures/history.png")
    assert answer.status_code == 404 and "history" in answer.json()["detail"]


def test_a_bad_run_fails_before_serving(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="no model found"):
        create_app(tmp_path / "missing")
    with pytest.raises(CnnlabError, match="no model found"):
        create_app(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(CnnlabError, match="cannot load"):
        create_app(tmp_path)


# --- Bad requests ---------------------------------------------------------------------------

JSON = {"content-type": "application/json"}
NAN_ROWS = "[" + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]"
GOOD = [[0.5] * 28] * 28
NOISE_PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))

BAD_REQUESTS: list[tuple[str, int, dict[str, Any]]] = [
    ("no body", 400, {}),
    ("empty JSON body", 400, {"content": b"", "headers": JSON}),
    ("malformed JSON", 400, {"content": b'{"pixels": [[0.1,', "headers": JSON}),
    ("JSON not UTF-8", 400, {"content": b"\xff\xfe[", "headers": JSON}),
    ("wrong shape", 422, {"json": [[0.5] * 28] * 27}),
    ("ragged rows", 422, {"json": [[0.5] * 28] * 27 + [[0.5] * 27]}),
    ("3-D shape", 422, {"json": [[[0.5, 0.5]] * 28] * 28}),
    ("a number", 422, {"json": 0.5}),
    ("object without pixels", 422, {"json": {"image": GOOD}}),
    ("value over 1", 422, {"json": [[0.5] * 27 + [1.5], *GOOD[1:]]}),
    ("negative value", 422, {"json": [[-0.1] * 28, *GOOD[1:]]}),
    ("NaN", 422, {"content": NAN_ROWS.encode(), "headers": JSON}),
    ("Infinity", 422, {"content": NAN_ROWS.replace("NaN", "Infinity").encode(), "headers": JSON}),
    ("strings", 422, {"json": [["0.5"] * 28] * 28}),
    ("booleans", 422, {"json": [[True] * 28] * 28}),
    ("text body", 415, {"content": b"hello", "headers": {"content-type": "text/plain"}}),
    ("form fields", 415, {"data": {"file": "x"}}),
    ("not an image", 415, upload(b"GIF89a but not really an image at all")),
    ("not an image body", 415, {"content": b"\x00" * 99, "headers": {"content-type": "image/png"}}),
    ("empty file", 400, upload(b"")),
    ("file in another field", 422, upload(png_bytes(np.zeros((28, 28), np.uint8)), field="img")),
    ("file over the limit", 413, upload(b"\x89PNG" + b"\x00" * (10 * 2**20))),
    ("body over the limit", 413, {"content": b"\0" * (11 * 2**20), "headers": JSON}),
    ("bomb: 40,000x40,000", 413, upload(png_declaring(40_000, 40_000))),
    ("bomb: 8,000x8,000", 413, upload(png_declaring(8_000, 8_000))),
    ("truncated image", 422, upload(NOISE_PNG[: len(NOISE_PNG) // 2])),
    ("top_k zero", 422, {"json": GOOD, "params": {"top_k": 0}}),
    ("top_k not a number", 422, {"json": GOOD, "params": {"top_k": "three"}}),
]


@pytest.mark.parametrize("route", ["/api/predict", "/api/features"])
@pytest.mark.parametrize(
    ("status", "request_args"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_a_4xx_message(
    client: TestClient, route: str, status: int, request_args: dict[str, Any]
) -> None:
    response = client.post(route, **request_args)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail
    assert_still_serving(client)


def test_a_streamed_body_over_the_limit_is_refused_while_it_arrives(app: FastAPI) -> None:
    """Without a Content-Length, the app stops pulling the body once it passes the limit."""
    chunk = b"\0" * 2**16
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pulled < 2**30}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"image/png"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert pulled <= 10 * 2**20 + inputs.MULTIPART_ENVELOPE_BYTES + len(chunk)


def test_an_upload_over_the_limit_leaves_a_real_server_serving(live_server: LiveServer) -> None:
    streamed = (b"\0" * 2**16 for _ in range(11 * 16))  # 11 MiB without a Content-Length
    for body in [b"\0" * (11 * 2**20), streamed]:
        try:
            response = httpx.post(
                f"{live_server.url}/api/predict",
                content=body,
                headers={"content-type": "image/png"},
            )
        except httpx.TransportError:  # a server may close the connection on an early answer
            continue
        assert response.status_code == 413
        assert "limit" in response.json()["detail"]
    assert httpx.get(f"{live_server.url}/api/health").status_code == 200


@pytest.mark.parametrize(
    ("status", "request_args"),
    [
        (400, {}),
        (415, {"json": GOOD}),
        (422, upload(png_bytes(np.zeros((28, 28), np.uint8)))),  # field "file", not "files"
        (413, {"files": [("files", ("big.png", b"\0" * (11 * 2**20), "image/png"))]}),
    ],
    ids=["no body", "JSON", "no files field", "over the limit"],
)
def test_bad_batch_requests_get_a_4xx_message(
    client: TestClient, status: int, request_args: dict[str, Any]
) -> None:
    response = client.post("/api/predict/batch", **request_args)
    assert response.status_code == status and isinstance(response.json()["detail"], str)
    assert_still_serving(client)


def test_the_upload_limit_is_configurable(tiny_run: Path, images: Images) -> None:
    data = png_bytes(images[0][1])
    small = TestClient(create_app(tiny_run, max_upload_bytes=len(data)))
    assert small.post("/api/predict", **upload(data)).status_code == 200
    too_big = small.post("/api/predict", **upload(data + b"\0"))
    assert too_big.status_code == 413 and f"{len(data):,} bytes" in too_big.json()["detail"]
    assert small.get("/api/model").json()["limits"]["max_upload_bytes"] == len(data)


def test_an_unexpected_error_is_a_json_500_without_a_traceback(
    client: TestClient, app: FastAPI, images: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("secret internals at /home/someone")

    monkeypatch.setattr(app.state.service.predictor, "_forward", broken)  # the model call
    response = client.post("/api/predict", json=pixels(images[0][1]))
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; the server log has the details"}
    assert "secret" not in response.text
    monkeypatch.undo()
    assert client.post("/api/predict", json=pixels(images[0][1])).status_code == 200


def test_answers_say_whether_they_are_unsure(evaluated_run: Path, images: Images) -> None:
    from cnnlab.calibration import UnsureRule

    _, array = images[0]
    app = create_app(evaluated_run)
    rule = app.state.service.predictor.unsure_rule
    assert rule is not None
    evaluated = TestClient(app)
    answer = evaluated.post("/api/predict", json=pixels(array), params={"top_k": 4}).json()
    top = {item["class"]: item["probability"] for item in answer["top"]}
    row = np.array([top[name] for name in app.state.service.class_names])
    assert answer["unsure"] is rule.is_unsure(row)
    # Every answer is marked when the threshold is above any probability.
    app.state.service.predictor.unsure_rule = UnsureRule(rule.temperature, 1.01)
    assert evaluated.post("/api/predict", json=pixels(array)).json()["unsure"] is True
    batch = evaluated.post(
        "/api/predict/batch", files=[("files", ("a.png", png_bytes(array), "image/png"))]
    ).json()
    assert batch["predictions"][0]["unsure"] is True
    app.state.service.predictor.unsure_rule = None  # a run not evaluated: null
    assert evaluated.post("/api/predict", json=pixels(array)).json()["unsure"] is None
