"""What the four fuzz targets share: write the input to a file, call the reader, allow only
cnnlab's own errors. Any other exception, a hang (libFuzzer's -timeout) or runaway memory
(-rss_limit_mb) is a finding, and libFuzzer saves the input as crash-*/timeout-*/oom-*."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from cnnlab.errors import CnnlabError

_FOLDER = Path(tempfile.mkdtemp(prefix="cnnlab-fuzz-"))


def as_file(data: bytes, name: str) -> Path:
    """The fuzzer's bytes as a file the reader opens by path (rewritten for every input)."""
    path = _FOLDER / name
    path.write_bytes(data)
    return path


def expect_loads_or_refuses(call: Callable[[], object]) -> None:
    """Run one input: a result or a one-line CnnlabError are fine, anything else crashes."""
    try:
        call()
    except CnnlabError as exc:
        message = str(exc)
        if not message or "\n" in message.strip():
            raise AssertionError(f"error message is not one line: {message!r}") from exc


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Start libFuzzer on `test_one_input` with sensible defaults the command line can override."""
    defaults = ["-timeout=20", "-rss_limit_mb=3072", "-max_len=4096"]
    given = {arg.split("=")[0] for arg in sys.argv[1:] if arg.startswith("-")}
    argv = [sys.argv[0], *(d for d in defaults if d.split("=")[0] not in given), *sys.argv[1:]]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
