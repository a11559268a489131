"""Coverage-guided fuzzing of the IDX reader: `python fuzz/fuzz_idx.py [libFuzzer flags]`."""

from __future__ import annotations

import atheris
from _harness import as_file, expect_loads_or_refuses, main

with atheris.instrument_imports():
    from cnnlab.data.idx import content_sha256, read_idx, read_idx_header


def test_one_input(data: bytes) -> None:
    path = as_file(data, "fuzz-idx3-ubyte")
    expect_loads_or_refuses(lambda: read_idx(path))
    expect_loads_or_refuses(lambda: read_idx_header(path))
    expect_loads_or_refuses(lambda: content_sha256(path))


if __name__ == "__main__":
    main(test_one_input)
