"""Coverage-guided fuzzing of image loading and preprocessing (Pillow's decoders included):
`python fuzz/fuzz_image.py [libFuzzer flags]`; seed it with small images for speed."""

from __future__ import annotations

import atheris
from _harness import expect_loads_or_refuses, main

with atheris.instrument_imports():
    from cnnlab.prediction.preprocess import prepare_image, prepare_whole_image


def test_one_input(data: bytes) -> None:
    expect_loads_or_refuses(lambda: prepare_image(data))
    expect_loads_or_refuses(lambda: prepare_whole_image(data))


if __name__ == "__main__":
    main(test_one_input)
