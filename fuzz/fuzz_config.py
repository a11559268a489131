"""Coverage-guided fuzzing of the config loader (TOML): `python fuzz/fuzz_config.py [flags]`."""

from __future__ import annotations

import atheris
from _harness import as_file, expect_loads_or_refuses, main

with atheris.instrument_imports():
    from cnnlab.config import load_config


def test_one_input(data: bytes) -> None:
    path = as_file(data, "run.toml")
    expect_loads_or_refuses(lambda: load_config(path))


if __name__ == "__main__":
    main(test_one_input)
