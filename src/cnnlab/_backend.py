"""The one place that imports Keras, so `import cnnlab` and `cnnlab --help` stay fast, and the
backend stays open until something needs Keras.

`LazyKerasClass` is how cnnlab's own Keras classes (callbacks, layers) are written as ordinary
module-level classes without importing Keras: the Keras base class is mixed in when the first
instance is made.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, ClassVar

DEFAULT_BACKEND = "tensorflow"
"""The Keras backend where neither train.backend nor $KERAS_BACKEND names one."""
BACKENDS = (DEFAULT_BACKEND, "jax", "torch")
"""The Keras backends cnnlab trains on."""
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
"""train.precision's choices: a Keras dtype policy, or "auto" (`auto_precision`)."""
PRECISION_ENV = "CNNLAB_PRECISION"


def keras() -> ModuleType:
    """Import and return Keras (TensorFlow backend unless KERAS_BACKEND says otherwise)."""
    if sys.modules.get("keras") is None:
        os.environ.setdefault("KERAS_BACKEND", DEFAULT_BACKEND)
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


_AnyBase: Any = object  # typed Any: mypy then accepts what the Keras base adds (`self.model`...)


class LazyKerasClass(_AnyBase):
    """A subclass of a Keras class (`keras_base`, e.g. "callbacks.Callback") that can be
    imported, and subclassed, without importing Keras.

    Write the subclass as a subclass of the Keras class would be written. Its first instance
    imports Keras and makes (once) the class that derives from it and from the Keras base;
    every instance is of that class, so `isinstance` holds for both. With `keras_package` set,
    that class is also registered with Keras' serialisation under the package name, so a saved
    model that contains it loads back.
    """

    keras_base: ClassVar[str] = ""
    keras_package: ClassVar[str | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        made = keras_subclass(cls)
        new = super(LazyKerasClass, made).__new__  # type: ignore[misc]  # the Keras base's
        return new(made) if new is object.__new__ else new(made, *args, **kwargs)


_MADE: dict[type, type] = {}


def keras_subclass(cls: type[LazyKerasClass]) -> type:
    """`cls` as a subclass of its Keras base too (itself if it already is one), made once."""
    if cls not in _MADE:
        module = keras()
        base = operator.attrgetter(cls.keras_base)(module)
        if issubclass(cls, base):
            return cls
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        made: type = type(cls.__name__, (cls, base), {**namespace, "__doc__": cls.__doc__})
        if cls.keras_package:
            made = module.saving.register_keras_serializable(package=cls.keras_package)(made)
        _MADE[cls] = made
    return _MADE[cls]


def backend_name() -> str:
    """The Keras backend in use, or the one the first Keras import will use."""
    if sys.modules.get("keras") is not None:
        return str(sys.modules["keras"].backend.backend())
    return requested_backend(os.environ)


def requested_backend(environ: Mapping[str, str]) -> str:
    """The backend `environ` asks Keras for: $KERAS_BACKEND, else the default."""
    return environ.get("KERAS_BACKEND") or DEFAULT_BACKEND


def select_backend(name: str) -> str:
    """Make `name` the Keras backend ("auto": keep the current one); return the one in use.

    Keras reads KERAS_BACKEND once, at its first import: after that it can only be checked.
    """
    from cnnlab.errors import CnnlabError

    if name == "auto":
        name = backend_name()
    if name not in BACKENDS:
        raise CnnlabError(
            f"unknown Keras backend {name!r} (train.backend or $KERAS_BACKEND); "
            f"choose one of {', '.join(BACKENDS)}"
        )
    if sys.modules.get("keras") is None:
        os.environ["KERAS_BACKEND"] = name
    elif backend_name() != name:
        raise CnnlabError(
            f"Keras is already running on the {backend_name()} backend and cannot switch to "
            f"{name}; start a new process with KERAS_BACKEND={name}"
        )
    return name


def auto_precision() -> tuple[str, str]:
    """What `--precision auto` resolves to, and why: $CNNLAB_PRECISION where it is set (the
    test suite forces float32 with it), else the precision this machine trains fastest with."""
    forced = os.environ.get(PRECISION_ENV, "").strip()
    if forced and forced != "auto":
        from cnnlab.errors import ConfigError

        if forced not in PRECISIONS:
            raise ConfigError(
                f"${PRECISION_ENV}={forced!r} is not a precision; set it to one of "
                f"{', '.join(PRECISIONS)} or unset it"
            )
        return forced, f"${PRECISION_ENV}={forced}"
    return precision_choice()


def fastest_precision() -> str:
    """The mixed-precision policy this machine trains fastest with (see `precision_choice`)."""
    return precision_choice()[0]


def precision_choice() -> tuple[str, str]:
    """The policy this machine trains fastest with, and the reason in words.

    A GPU: `mixed_bfloat16` where it has bfloat16 tensor cores (compute capability 8.0 and up:
    A100, H100, RTX 30xx on), else `mixed_float16`. A CPU with bfloat16 instructions (x86 AMX or
    AVX-512 BF16, Arm BF16): `mixed_bfloat16`, about 2x float32 for the seed model on an Intel
    Xeon with AMX (see docs/performance.md). Otherwise float32. The CPU is read by `cnnlab._cpu`.
    """
    from cnnlab._cpu import cpu_precision

    capability = _gpu_compute_capability(keras().backend.backend())
    if capability is not None:
        policy = "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
        return policy, f"GPU with compute capability {capability[0]}.{capability[1]}"
    return cpu_precision()


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
