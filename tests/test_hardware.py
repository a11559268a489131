"""The CPU read from /proc/cpuinfo text, the precision it decides, and how a run records both."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab import _backend
from cnnlab._cpu import cpu_info, cpu_precision
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError, ConfigError

# Trimmed from real /proc/cpuinfo files (first processor only; the flags cut to the telling ones).
INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AMD_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni vaes vpclmulqdq
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve asimdfhm svebf16 i8mm bf16 rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd40
"""
GRAVITON2 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize(
    ("text", "model", "machine", "sets", "precision"),
    [
        (
            INTEL_AMX,
            "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
            None,
            ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma"),
            "mixed_bfloat16",
        ),
        (AMD_ZEN3, "AMD EPYC 7B13", None, ("avx2", "fma"), "float32"),
        (GRAVITON3, "Neoverse V1", "aarch64", ("bf16", "i8mm", "sve", "asimd"), "mixed_bfloat16"),
        (GRAVITON2, "Neoverse N1", "aarch64", ("asimd",), "float32"),
    ],
    ids=["intel-amx", "amd-zen3", "aarch64-bf16", "aarch64-no-bf16"],
)
def test_cpu_info_and_the_precision_it_decides(
    text: str, model: str, machine: str | None, sets: tuple[str, ...], precision: str
) -> None:
    info = cpu_info(text)
    assert info.model == model
    assert info.instruction_sets == sets
    if machine:
        assert info.machine == machine
    policy, reason = cpu_precision(info)
    assert policy == precision
    assert model in reason
    if precision == "mixed_bfloat16":
        assert any(s in reason for s in ("amx_bf16", "avx512_bf16", "bf16"))
    assert info.to_dict()["instruction_sets"] == list(sets)
    assert model in info.describe()


def test_unknown_or_missing_cpuinfo_still_answers() -> None:
    info = cpu_info("")
    assert info.model and info.instruction_sets == ()
    assert cpu_precision(info)[0] == "float32"
    other = cpu_info("Features\t: fp asimd\nCPU implementer\t: 0x61\nCPU part\t: 0x022\n")
    assert other.model == "Arm CPU (implementer 0x61, part 0x022)"


def test_this_machine_is_read() -> None:
    info = cpu_info()
    if Path("/proc/cpuinfo").is_file():
        assert info.model and info.machine


def test_cnnlab_precision_forces_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_PRECISION", "float32")
    assert _backend.auto_precision() == ("float32", "$CNNLAB_PRECISION=float32")
    monkeypatch.setenv("CNNLAB_PRECISION", "mixed_bfloat16")
    assert _backend.auto_precision()[0] == "mixed_bfloat16"
    monkeypatch.setenv("CNNLAB_PRECISION", "fp8")
    with pytest.raises(ConfigError, match=r"\$CNNLAB_PRECISION='fp8'.*float32"):
        _backend.auto_precision()
    monkeypatch.delenv("CNNLAB_PRECISION")
    assert _backend.auto_precision() == _backend.precision_choice()


def test_the_backend_cannot_change_once_keras_runs() -> None:
    _backend.keras()  # the suite runs on TensorFlow
    assert _backend.select_backend("auto") == "tensorflow"
    assert _backend.select_backend("tensorflow") == "tensorflow"
    with pytest.raises(CnnlabError, match="KERAS_BACKEND=jax"):
        _backend.select_backend("jax")
    with pytest.raises(CnnlabError, match="choose one of tensorflow, jax, torch"):
        _backend.select_backend("theano")
    with pytest.raises(ConfigError, match=r"train\.backend"):
        load_config(overrides={"train.backend": "mxnet"})


@pytest.mark.parametrize(
    ("backend", "given", "expected"),
    [("tensorflow", 0, 16), ("jax", 0, 16), ("torch", 0, 1), ("torch", 8, 1), ("jax", 4, 4)],
)
def test_steps_per_execution_follows_the_backend(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    given: int,
    expected: int,
) -> None:
    import cnnlab.training.trainer as training

    monkeypatch.setattr(training, "select_backend", lambda name: backend)
    overrides = {"train.steps_per_execution": given, "train.seed": 1, "train.precision": "float32"}
    config = load_config(overrides=overrides)
    resolved = training.resolve_defaults(config).train
    assert (resolved.backend, resolved.steps_per_execution) == (backend, expected)
    lowered = backend == "torch" and given > 1
    assert ("lowered to 1" in caplog.text) == lowered
