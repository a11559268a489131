"""Bad input, fuzzed: every entry point that reads a user's file either loads it or says why.

Property-based tests (hypothesis) over the four readers of untrusted input: the IDX reader, the
image loader and preprocessing, the architecture-file parser and the config loader. The property
is the same for all: the input loads, or a `CnnlabError` subclass is raised with a one-line
message naming the file; never another exception, never a hang (a per-example alarm), never
memory that grows with what a header declares rather than with the bytes present.

Examples per test: 100 by default (the whole file ran in under 10 s on 2 shared cores);
`CNNLAB_FUZZ_EXAMPLES=2000` for a longer search. The coverage-guided harness is in fuzz/.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cnnlab._backend import keras as _keras
from cnnlab.config import Config, load_config
from cnnlab.data.idx import content_sha256, read_idx, read_idx_header
from cnnlab.data.images import load_image
from cnnlab.errors import CnnlabError, ConfigError, DataError, ImageError
from cnnlab.model.builder import Architecture, build_model, load_architecture, parse_architecture
from cnnlab.prediction.preprocess import prepare_image, prepare_whole_image

EXAMPLES = int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # generous: the CPU is shared; the alarm below catches hangs
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CNNLAB_FUZZ_RANDOM") is None,  # CI: the same examples each run
)
HANG_SECONDS = 20
PEAK_BYTES = 32 * 2**20  # no input below is larger than a few kB; a header may declare 16 GB


@contextlib.contextmanager
def _bounded(limit_bytes: int = PEAK_BYTES) -> Iterator[None]:
    """Fail if the body runs longer than HANG_SECONDS or its traced allocations exceed a bound."""

    def _hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"no result after {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(HANG_SECONDS)
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak < limit_bytes, f"peak allocation {peak:,} bytes"
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _load_or_refuse(
    load: Callable[[], Any], kind: type[CnnlabError], name: str, limit_bytes: int = PEAK_BYTES
) -> Any | None:
    """The result of `load()` within the bounds, or None after checking its refusal."""
    try:
        with _bounded(limit_bytes):
            return load()
    except kind as exc:
        _check_refusal(exc, kind, name)
        return None


def _check_refusal(exc: CnnlabError, kind: type[CnnlabError], name: str) -> None:
    """A refusal is cnnlab's own error of the right kind, one line, naming the input."""
    assert isinstance(exc, kind), repr(exc)
    message = str(exc)
    assert message and "\n" not in message.strip(), message
    assert name in message, message


# --- IDX ------------------------------------------------------------------------------------

_IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@st.composite
def _idx_files(draw: st.DrawFn) -> bytes:
    """IDX-like bytes: a plausible header (sometimes lying), a payload near its size, damage."""
    code = draw(st.sampled_from([*_IDX_CODES, 0x00, 0x0A, 0xFF]))
    ndim = draw(st.integers(0, 6))
    small = st.integers(1, 6)
    dims = draw(st.lists(st.one_of(small, st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    magic = draw(st.sampled_from([0, 0, 0, 1, 0x1F8B]))
    header = struct.pack(f">HBB{ndim}I", magic, code, ndim, *dims)
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    declared = int(np.prod(dims, dtype=object)) * itemsize if dims else 0
    length = draw(st.sampled_from([declared, declared - 1, declared + 1, 0, 7]))
    payload = draw(st.binary(min_size=max(0, min(length, 512)), max_size=max(0, min(length, 512))))
    data = header + payload
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        data = data[:cut]
    flip = draw(st.one_of(st.none(), st.integers(0, max(0, len(data) - 1))))
    if flip is not None and data:
        data = data[:flip] + bytes([data[flip] ^ 0xFF]) + data[flip + 1 :]
    return data


@FUZZ
@given(data=st.one_of(_idx_files(), st.binary(max_size=300)))
def test_idx_reader_loads_or_says_why(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz-idx3-ubyte"
    path.write_bytes(data)
    for read in (read_idx, read_idx_header, content_sha256):
        result = _load_or_refuse(lambda read=read: read(path), DataError, str(path))
        if result is not None and read is read_idx:
            assert isinstance(result, np.ndarray) and result.size > 0
            assert result.shape == read_idx_header(path).shape
            assert result.dtype.isnative


def test_idx_huge_declared_dimension_is_refused_before_allocation(tmp_path: Path) -> None:
    path = tmp_path / "huge.idx"
    path.write_bytes(struct.pack(">HBB3I", 0, 0x0E, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"x")
    with _bounded(limit_bytes=2**20), pytest.raises(DataError, match=r"over the .*-byte limit"):
        read_idx(path)


def test_idx_gzip_lie_under_the_cap_costs_only_the_bytes_present(tmp_path: Path) -> None:
    # 1 GB declared (under the cap), 100 bytes present: truncated, and nothing near 1 GB taken.
    path = tmp_path / "lie.idx.gz"
    path.write_bytes(gzip.compress(struct.pack(">HBB1I", 0, 0x08, 1, 2**30) + bytes(100)))
    with _bounded(limit_bytes=8 * 2**20), pytest.raises(DataError, match="truncated"):
        read_idx(path)


# --- Images -----------------------------------------------------------------------------------

_FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM"]
_MODES = ["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "I", "F", "CMYK"]


@st.composite
def _encoded_images(draw: st.DrawFn) -> bytes:
    """A real image (any small size, mode, format), then maybe truncated or damaged."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(_MODES))
    pixels = draw(hnp.arrays(np.uint8, (height, width, 3)))
    image = Image.fromarray(pixels, "RGB").convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=draw(st.sampled_from(_FORMATS)))
    except (OSError, ValueError, KeyError):  # this format cannot store this mode
        image.convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "cut", "flip", "splice"]))
    if damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    elif damage == "splice":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=64)) + data[at:]
    return data


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds one tiny compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _check_prepared(array: np.ndarray, shape: tuple[int, ...] | None = None) -> None:
    assert array.dtype == np.float32 and array.ndim == 3 and array.shape[2] == 1
    assert shape is None or array.shape == shape
    assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1


@FUZZ
@given(
    data=st.one_of(
        _encoded_images(),
        st.binary(max_size=200),
        st.builds(_png_declaring, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    )
)
def test_image_bytes_load_or_say_why(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.img"
    path.write_bytes(data)
    for source in (data, path):
        name = "<bytes>" if source is data else str(path)
        for prepare in (prepare_image, prepare_whole_image):
            prepared = _load_or_refuse(
                lambda prepare=prepare, source=source: prepare(source),
                ImageError,
                name,
                limit_bytes=256 * 2**20,  # Pillow's own buffers are not traced
            )
            if prepared is not None:
                _check_prepared(prepared.array, (28, 28, 1) if prepare is prepare_image else None)


_ARRAY_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, bool]
)


@FUZZ
@given(
    array=hnp.arrays(
        _ARRAY_DTYPES,
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_image_arrays_load_or_say_why(array: np.ndarray) -> None:
    for prepare in (prepare_image, prepare_whole_image):
        prepared = _load_or_refuse(lambda prepare=prepare: prepare(array), ImageError, "<array")
        if prepared is not None:
            _check_prepared(prepared.array, (28, 28, 1) if prepare is prepare_image else None)


def test_png_declaring_a_huge_size_is_refused_before_decoding() -> None:
    with _bounded(limit_bytes=2**20), pytest.raises(ImageError, match="pixels"):
        load_image(_png_declaring(100_000, 100_000))


# --- Architecture files -------------------------------------------------------------------------

_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["Conv2D", "Dense", "Flatten", "input", "num_classes", "relu", "a", "b"]),
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_LAYER = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["Conv2D", "Dense", "Flatten", "Add"]), _JSON_LEAVES)},
    optional={
        "name": st.one_of(st.sampled_from(["a", "b", "input", ""]), _JSON_LEAVES),
        "inputs": st.one_of(
            st.sampled_from(["a", "b", "input"]), st.lists(st.sampled_from(["a", "b"])), _JSON
        ),
        "units": _JSON_LEAVES,
    },
)
_SPEC = st.fixed_dictionaries(
    {},
    optional={
        "name": _JSON_LEAVES,
        "description": _JSON,
        "layers": st.one_of(st.lists(_LAYER, max_size=5), _JSON),
        "any_input_size": _JSON_LEAVES,
        "extra": _JSON,
    },
)


def _toml_or_none(value: dict[str, Any]) -> str | None:
    try:
        return tomli_w.dumps(value)
    except (TypeError, ValueError):  # None and mixed arrays have no TOML spelling
        return None


@FUZZ
@given(
    spec=st.one_of(_SPEC, _JSON),
    suffix=st.sampled_from([".json", ".toml"]),
    noise=st.one_of(st.none(), st.binary(max_size=200)),
)
def test_architecture_files_load_or_say_why(
    tmp_path: Path, spec: Any, suffix: str, noise: bytes | None
) -> None:
    path = tmp_path / f"arch{suffix}"
    if noise is not None:
        path.write_bytes(noise)
    elif suffix == ".json":
        path.write_text(json.dumps(spec), encoding="utf-8")
    else:
        text = _toml_or_none(spec) if isinstance(spec, dict) else None
        path.write_text(text if text is not None else repr(spec), encoding="utf-8")
    architecture = _load_or_refuse(lambda: load_architecture(path), ConfigError, str(path))
    assert architecture is None or (isinstance(architecture, Architecture) and architecture.layers)


@FUZZ
@given(spec=st.one_of(_SPEC, _JSON))
def test_architecture_dicts_parse_or_say_why(spec: Any) -> None:
    try:
        parse_architecture(spec, source="fuzz")
    except ConfigError as exc:
        _check_refusal(exc, ConfigError, "fuzz")


_SMALL = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 8),
    st.floats(-1, 2),
    st.lists(st.integers(-1, 5), max_size=3),
    st.sampled_from(["same", "valid", "relu", "softmax", "num_classes", "x", ""]),
)
_BUILD_LAYER = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                *["Conv2D", "Dense", "MaxPool2D", "Flatten", "Dropout", "BatchNormalization"],
                *["Reshape", "Add", "Concatenate", "GlobalAveragePooling2D", "Activation"],
            ]
        )
    },
    optional={
        key: _SMALL
        for key in [
            *["filters", "kernel_size", "units", "padding", "activation", "strides"],
            *["pool_size", "rate", "target_shape", "axis"],
        ]
    },
)


@pytest.fixture(scope="module")
def keras_loaded() -> None:
    """Import Keras before any timed, traced example: the import alone takes seconds."""
    _keras()


@settings(FUZZ, max_examples=max(10, EXAMPLES // 4))  # each build costs tens of ms in Keras
@given(layers=st.lists(_BUILD_LAYER, min_size=1, max_size=4))
def test_architectures_build_or_say_why(keras_loaded: None, layers: list[dict[str, Any]]) -> None:
    """Small option values only: a valid file may ask for a model of any size, on purpose."""
    model = _load_or_refuse(
        lambda: build_model(parse_architecture({"layers": layers}, source="fuzz")),
        ConfigError,
        "fuzz",
        limit_bytes=2**30,
    )
    assert model is None or model.count_params() >= 0


# --- Config files -------------------------------------------------------------------------------

_TOML_LEAVES = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(10**400), 10**400),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["default", "seed", "adam", "cosine", "random", "float32"]),
)
_TOML_VALUE = st.recursive(
    _TOML_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_KEYS = {
    "data": ["dataset", "data_dir", "validation_split", "limit", "download"],
    "model": ["architecture", "init_filters"],
    "train": ["recipe", "epochs", "batch_size", "learning_rate", "lr_decay", "seed", "monitor"],
    "run": ["name", "runs_dir"],
}


@st.composite
def _config_tables(draw: st.DrawFn) -> dict[str, Any]:
    """A config's sections with known and unknown keys, any value type, and stray sections."""
    tables: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*_KEYS, "other"]), max_size=4, unique=True)):
        if draw(st.integers(0, 9)) == 0:
            tables[section] = draw(_TOML_LEAVES)  # a section that is not a table
            continue
        keys = st.sampled_from([*_KEYS.get(section, []), "bogus"])
        tables[section] = draw(st.dictionaries(keys, _TOML_VALUE, max_size=4))
    return tables


@FUZZ
@given(
    tables=_config_tables(),
    noise=st.one_of(st.none(), st.binary(max_size=200), st.text(max_size=200)),
)
def test_config_files_load_or_say_why(
    tmp_path: Path, tables: dict[str, Any], noise: bytes | str | None
) -> None:
    path = tmp_path / "run.toml"
    if isinstance(noise, bytes):
        path.write_bytes(noise)
    elif isinstance(noise, str):
        path.write_text(noise, encoding="utf-8", errors="surrogatepass")
    else:
        text = _toml_or_none(tables)
        if text is None:
            return
        path.write_text(text, encoding="utf-8")
    config = _load_or_refuse(lambda: load_config(path), ConfigError, str(path))
    if config is None:
        return
    assert isinstance(config, Config)
    assert load_config(overrides=_flat(config.to_dict())) == config  # what loads, re-loads


def _flat(tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, table in tables.items() for k, v in table.items()}


# --- Regressions: each bug the fuzzers found, as a plain test -----------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[train]\nlearning_rate = 1" + "0" * 400 + "\n", "too large"),  # int -> float overflow
        ("train = 5\n", r"\[train\] must be a table"),  # AttributeError in the recipe look-up
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),  # RecursionError
    ],
)
def test_config_regressions(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_config_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300 + ".toml")  # OSError "File name too long", even as root
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("deep.json", b"[" * 100_000, "nested too deeply"),  # RecursionError in json
        ("deep.toml", b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        ("latin.toml", b'name = "caf\xe9"\n', "not UTF-8"),  # UnicodeDecodeError
        ("latin.json", b'{"name": "caf\xe9"}', "not UTF-8"),
        ("inputs.json", b'{"layers": [{"type": "Dense", "inputs": 5}]}', "`inputs` must be"),
    ],
)
def test_architecture_regressions(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_architecture(path)


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": 5},  # AttributeError
        {"type": "Dense", "units": 10**12},  # the backend's out-of-memory error
    ],
)
def test_build_regressions(keras_loaded: None, layer: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^fuzz: ") as caught:
        build_model(parse_architecture({"layers": [{"type": "Flatten"}, layer]}, source="fuzz"))
    _check_refusal(caught.value, ConfigError, "fuzz")
