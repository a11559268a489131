"""Write a small starting corpus for each fuzz target into fuzz/corpus/<target>/ (git-ignored):
real files of each kind, so the fuzzer starts from valid input and mutates inward."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

import numpy as np
import tomli_w
from PIL import Image

from cnnlab.config import Config
from cnnlab.data.idx import write_idx

CORPUS = Path(__file__).parent / "corpus"


def main() -> None:
    for target in ("idx", "image", "architecture", "config"):
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, dtype in enumerate([np.uint8, np.int16, np.float32]):
        for compress in (False, True):
            array = rng.integers(0, 100, size=(2, 3, 4)).astype(dtype)
            write_idx(CORPUS / "idx" / f"seed{i}{'.gz' if compress else ''}", array, compress)
    for fmt, mode in [
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("JPEG", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("WEBP", "RGB"),
        ("TIFF", "I;16"),
    ]:
        pixels = rng.integers(0, 255, size=(12, 10, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").convert(mode).save(buffer, format=fmt)
        (CORPUS / "image" / f"seed-{mode.replace(';', '')}.{fmt.lower()}").write_bytes(
            buffer.getvalue()
        )
    for spec in (resources.files("cnnlab") / "architectures").iterdir():
        if spec.name.endswith(".toml"):
            (CORPUS / "architecture" / spec.name).write_text(spec.read_text("utf-8"))
    (CORPUS / "architecture" / "residual.json").write_text(
        '{"name": "r", "layers": [{"type": "Conv2D", "filters": 4, "kernel_size": 3, '
        '"name": "a"}, {"type": "Add", "inputs": ["a", "input"]}, {"type": "Flatten"}, '
        '{"type": "Dense", "units": "num_classes"}]}'
    )
    (CORPUS / "config" / "full.toml").write_text(tomli_w.dumps(Config().to_dict()))
    for preset in (resources.files("cnnlab") / "presets").iterdir():
        if preset.name.endswith(".toml"):
            (CORPUS / "config" / preset.name).write_text(preset.read_text("utf-8"))


if __name__ == "__main__":
    main()
