"""Many clients at once against a real uvicorn: every answer is the one a lone client gets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
from photoset import make_photo
from serve_helpers import LiveServer, png_bytes
from synthetic import CLASS_NAMES, make_images

THREADS = 32
ROUNDS = 3  # requests per image

Answer = tuple[int, Any]  # status code, JSON body
Upload = tuple[str, bytes, str]  # file name, bytes, content type


def alone_and_together(url: str, uploads: list[Upload]) -> tuple[list[Answer], list[Answer]]:
    """Each upload's answer from `/api/predict` asked one at a time, then every upload asked
    ROUNDS times from as many threads as there are uploads, all at once."""
    with httpx.Client(base_url=url, timeout=60) as client:

        def predict(index: int) -> Answer:
            files = {"file": uploads[index]}
            response = client.post("/api/predict", files=files, params={"top_k": 4})
            return response.status_code, response.json()

        alone = [predict(index) for index in range(len(uploads))]
        with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
            indices = [i for _ in range(ROUNDS) for i in range(len(uploads))]
            together = list(pool.map(predict, indices))
    return alone, together


def test_concurrent_predictions_equal_single_threaded_ones(live_server: LiveServer) -> None:
    labels = np.tile(np.arange(len(CLASS_NAMES)), THREADS // len(CLASS_NAMES))
    arrays = make_images(labels, np.random.default_rng(99))
    # Move each bar a little so that no two requests carry the same image.
    arrays = [np.roll(array, shift=i % 5 - 2, axis=i % 2) for i, array in enumerate(arrays)]
    bodies = [png_bytes(array) for array in arrays]
    assert len(set(bodies)) == THREADS

    uploads = [(f"{index}.png", body, "image/png") for index, body in enumerate(bodies)]
    alone, together = alone_and_together(live_server.url, uploads)

    assert [answer["label"] for _, answer in alone] == [CLASS_NAMES[label] for label in labels]
    assert together == alone * ROUNDS  # same classes and bit-identical probabilities


def test_concurrent_photos_get_the_lone_answers_and_boxes(live_server: LiveServer) -> None:
    """Photos are prepared in parallel (only Pillow's decoding is serialised): each answer, the
    found box included, is the one a lone client gets."""
    rng = np.random.default_rng(5)
    garments = make_images(np.arange(len(CLASS_NAMES)).repeat(2), rng)
    conditions = ["noise", "gradient", "shadow", "rotated"]
    photos = [
        make_photo(garment, conditions[i % len(conditions)], 1, rng).jpeg()
        for i, garment in enumerate(garments)
    ]

    uploads = [(f"{index}.jpg", photo, "image/jpeg") for index, photo in enumerate(photos)]
    alone, together = alone_and_together(live_server.url, uploads)

    assert all(status == 200 and answer["box"] is not None for status, answer in alone)
    assert together == alone * ROUNDS  # same boxes, bit-identical probabilities
