"""Coverage-guided fuzzing of the architecture-file parser (TOML and JSON):
`python fuzz/fuzz_architecture.py [libFuzzer flags]`. The first byte picks the format."""

from __future__ import annotations

import atheris
from _harness import as_file, expect_loads_or_refuses, main

with atheris.instrument_imports():
    from cnnlab.model.builder import load_architecture


def test_one_input(data: bytes) -> None:
    suffix = ".json" if data[:1] in (b"{", b"[") else ".toml"
    path = as_file(data, f"arch{suffix}")
    expect_loads_or_refuses(lambda: load_architecture(path))


if __name__ == "__main__":
    main(test_one_input)
