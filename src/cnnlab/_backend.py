"""The one place that imports Keras, so `import cnnlab` and `cnnlab --help` stay fast."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType


def keras() -> ModuleType:
    """Import and return Keras (TensorFlow backend unless KERAS_BACKEND says otherwise)."""
    if sys.modules.get("keras") is None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        # TensorFlow's C++ start-up notes (oneDNN, CPU features) are not for our users.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"
        try:
            with _stderr_silenced() if quiet else contextlib.nullcontext():
                import keras as _keras  # noqa: F401
        except ImportError as exc:
            from cnnlab.errors import CnnlabError

            raise CnnlabError(
                f"this needs Keras and TensorFlow, which are not installed ({exc}); "
                "install them with: pip install 'cnnlab[train]' (an exported .onnx model "
                "predicts and serves without them)"
            ) from None
    return sys.modules["keras"]


def fastest_precision() -> str:
    """The mixed-precision policy this machine trains fastest with.

    A GPU: `mixed_bfloat16` where it has bfloat16 tensor cores (compute capability 8.0 and up:
    A100, H100, RTX 30xx on), else `mixed_float16`. A CPU with bfloat16 instructions (AMX or
    AVX-512 BF16): `mixed_bfloat16`, about 2x float32 for the seed model here (see README).
    Otherwise float32.
    """
    capability = _gpu_compute_capability(keras().backend.backend())
    if capability is not None:
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = set(handle.read().split())
    except OSError:
        return "float32"
    return "mixed_bfloat16" if flags & {"amx_bf16", "avx512_bf16"} else "float32"


def _gpu_compute_capability(backend: str) -> tuple[int, int] | None:
    """The first GPU's CUDA compute capability as the backend sees it; None without a GPU."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        found = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return (int(found[0]), int(found[1])) if found else (0, 0)
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            return None
        found = getattr(gpus[0], "compute_capability", "0.0")
        major, _, minor = str(found).partition(".")
        return int(major), int(minor or 0)
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        capability = torch.cuda.get_device_capability(0)
        return int(capability[0]), int(capability[1])
    return None


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras dtype policy, then restore the previous global one."""
    mixed = keras().mixed_precision
    previous = mixed.global_policy().name
    mixed.set_global_policy(name)
    try:
        yield
    finally:
        mixed.set_global_policy(previous)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 while TensorFlow's C++ core loads.

    Some of its messages are written before absl logging starts, so TF_CPP_MIN_LOG_LEVEL
    cannot hide them. Python exceptions are unaffected: they are raised, not printed here.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (e.g. a closed descriptor): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            sys.stderr.flush()
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
