from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from synthetic import make_images

from cnnlab.inference import Predictor, predict


def _save(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_predicts_files_arrays_and_pil_images(tiny_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    images = make_images(np.array([0, 1, 2, 3]), rng)
    predictor = Predictor.load(tiny_run)
    assert predictor.class_names == ["top", "bottom", "left", "right"]
    sources = [
        _save(tmp_path / "top.png", images[0]),
        Image.fromarray(images[1]),
        images[2].astype(np.float32) / 255,
        _save(tmp_path / "right.bmp", images[3]),
    ]
    results = predictor.predict(sources, top_k=2)
    assert [r.label for r in results] == ["top", "bottom", "left", "right"]
    for result in results:
        assert len(result.top) == 2 and result.top[0][1] >= result.top[1][1]
        assert abs(sum(result.probabilities) - 1) < 1e-5


def test_a_bad_image_does_not_stop_the_others(tiny_run: Path, tmp_path: Path) -> None:
    good = _save(tmp_path / "good.png", make_images(np.array([1]), np.random.default_rng(1))[0])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    results = predict(tiny_run, [empty, good, tmp_path / "missing.jpg"])
    assert results[0].error and "empty.png" in results[0].error
    assert results[1].error is None and results[1].label == "bottom"
    assert results[2].error and "missing.jpg" in results[2].error
    assert results[0].to_dict() == {"source": str(empty), "error": results[0].error}
