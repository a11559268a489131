"""Architectures as data: a list of layer specs (TOML or JSON) and the builder that makes a model.

A spec file names the Keras model and lists its layers in order. Each layer is a table with a
`type` (any class in `keras.layers`, or one of cnnlab's own in `cnnlab.model.layers`: the
augmentations `RandomCanvas`, `RandomHorizontalFlip`, `RandomShift`, `RandomErasingMask`)
and that class's own keyword arguments, spelled as in Keras.
Two extra keys make graphs possible: `name` labels a layer and `inputs` lists the layer names
it reads from (default: the layer before it; `"input"` is the model input), which is how a
residual connection is written. The value `"num_classes"` anywhere stands for the number of
classes of the data, so one file serves any dataset.

Example, the seed model's first two layers::

    name = "Basic_CNN_model"
    [[layers]]
    type = "Conv2D"
    filters = 64
    kernel_size = [3, 3]
    activation = "relu"
    padding = "same"
    [[layers]]
    type = "MaxPool2D"
    pool_size = [2, 2]
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab._backend import keras as _keras
from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    import keras

NUM_CLASSES = "num_classes"
INPUT = "input"
_SPEC_KEYS = {"name", "description", "layers", "any_input_size"}
_LAYER_META_KEYS = {"type", "name", "inputs"}


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its Keras class name, optional label and inputs, and its keyword arguments."""

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    inputs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Architecture:
    """A named list of layers that `build_model` turns into a Keras model."""

    name: str
    layers: tuple[LayerSpec, ...]
    description: str = ""
    source: str = ""
    any_input_size: bool = False  # fully convolutional: height and width are left open

    @property
    def is_sequential(self) -> bool:
        """True when every layer reads only the one before it (a plain stack)."""
        return all(layer.inputs is None for layer in self.layers)


def builtin_architectures() -> list[str]:
    """Names of the architecture files shipped with cnnlab (`basic_cnn` is the seed model)."""
    folder = resources.files("cnnlab.model") / "architectures"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_architecture(spec: str | Path) -> Architecture:
    """Load a built-in architecture by name, or a `.toml` / `.json` file by path."""
    path = Path(spec)
    if path.suffix.lower() in {".toml", ".json"}:
        if not path.is_file():
            raise ConfigError(f"{path}: architecture file not found")
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    else:
        names = builtin_architectures()
        if str(spec) not in names:
            hint = _did_you_mean(str(spec), names)
            raise ConfigError(
                f"unknown architecture {str(spec)!r}{hint}; built-in: {', '.join(names)}, "
                "or give a path to a .toml/.json layer-spec file"
            )
        text = (resources.files("cnnlab.model") / "architectures" / f"{spec}.toml").read_text(
            "utf-8"
        )
        source, path = f"builtin:{spec}", Path(f"{spec}.toml")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except ValueError as exc:  # JSONDecodeError, TOMLDecodeError, an integer too long
        raise ConfigError(f"{source}: not valid {path.suffix[1:].upper()}: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{source}: not valid {path.suffix[1:].upper()}: nested too deeply"
        ) from None
    return parse_architecture(raw, source=source)


def parse_architecture(raw: Mapping[str, Any], *, source: str = "<dict>") -> Architecture:
    """Validate a decoded spec (from TOML, JSON or Python) and return an Architecture."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: an architecture is a table with `name` and `layers`")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}"
        )
    layers_raw = raw.get("layers")
    if not isinstance(layers_raw, Sequence) or isinstance(layers_raw, str) or not layers_raw:
        raise ConfigError(f"{source}: `layers` must be a non-empty list of layer tables")
    layers = []
    seen_names = {INPUT}
    for index, item in enumerate(layers_raw, start=1):
        where = f"{source}: layer {index}"
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
            raise ConfigError(f'{where}: each layer needs a `type`, e.g. type = "Conv2D"')
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or name in seen_names):
            raise ConfigError(f"{where}: `name` must be a new, unique string (got {name!r})")
        inputs = item.get("inputs")
        if inputs is not None:
            if isinstance(inputs, str):
                inputs = [inputs]
            if (
                not isinstance(inputs, list | tuple)
                or not inputs
                or not all(isinstance(i, str) for i in inputs)
            ):
                raise ConfigError(f"{where}: `inputs` must be a layer name or a list of them")
            missing = [i for i in inputs if i not in seen_names]
            if missing:
                raise ConfigError(
                    f"{where}: `inputs` names {missing}, which no earlier layer is called; "
                    f"known: {sorted(seen_names)}"
                )
            inputs = tuple(inputs)
        if name:
            seen_names.add(name)
        options = {k: v for k, v in item.items() if k not in _LAYER_META_KEYS}
        layers.append(LayerSpec(type=item["type"], options=options, name=name, inputs=inputs))
    name = raw.get("name", "model")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: `name` must be a non-empty string")
    any_size = raw.get("any_input_size", False)
    if not isinstance(any_size, bool):
        raise ConfigError(f"{source}: `any_input_size` must be true or false")
    return Architecture(
        name=name,
        layers=tuple(layers),
        description=str(raw.get("description", "")),
        source=source,
        any_input_size=any_size,
    )


def build_model(
    architecture: Architecture | str | Path,
    input_shape: Sequence[int | None] = (28, 28, 1),
    num_classes: int = 10,
) -> keras.Model:
    """Build the Keras model an architecture describes, for the given input shape and classes.

    A plain stack becomes a `keras.Sequential` (so its summary reads like the seed's); a spec
    with `inputs` becomes a functional `keras.Model`. With `any_input_size = true` the model's
    height and width are left open (None), as a fully convolutional network allows.
    """
    if not isinstance(architecture, Architecture):
        architecture = load_architecture(architecture)
    keras = _keras()
    # Under mixed precision the output layer stays float32, so softmax and loss are exact.
    mixed = keras.mixed_precision.global_policy().name.startswith("mixed")
    last = len(architecture.layers)
    layers = [
        _make_layer(keras, spec, num_classes, architecture.source, i, float32=mixed and i == last)
        for i, spec in enumerate(architecture.layers, start=1)
    ]
    shape = tuple(input_shape)
    if architecture.any_input_size:  # trained at one size, usable at any size from it up
        shape = (None, None, *shape[2:])
    inputs = keras.Input(shape=shape)
    if architecture.is_sequential:
        return _call_checked(
            lambda: keras.Sequential([inputs, *layers], name=architecture.name),
            architecture.source,
        )
    outputs: dict[str, Any] = {INPUT: inputs}
    current = inputs
    for index, (spec, layer) in enumerate(zip(architecture.layers, layers, strict=True), 1):
        if spec.inputs is None:
            args: Any = current
        else:
            args = [outputs[n] for n in spec.inputs]
            args = args[0] if len(args) == 1 else args
        current = _call_checked(
            lambda layer=layer, args=args: layer(args),
            f"{architecture.source}: layer {index} ({spec.type})",
        )
        if spec.name:
            outputs[spec.name] = current
    return _call_checked(
        lambda: keras.Model(inputs, current, name=architecture.name), architecture.source
    )


def _make_layer(
    keras: Any, spec: LayerSpec, num_classes: int, source: str, index: int, float32: bool = False
) -> Any:
    where = f"{source}: layer {index} ({spec.type})"
    from cnnlab.model.layers import custom_layers

    own = custom_layers()
    cls = own.get(spec.type) or getattr(keras.layers, spec.type, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        known = [n for n in dir(keras.layers) if n[:1].isupper()] + sorted(own)
        hint = _did_you_mean(spec.type, known)
        raise ConfigError(f"{where}: no such Keras layer{hint}")
    options = _substitute(dict(spec.options), num_classes)
    if spec.name:
        options["name"] = spec.name
    if float32:
        options.setdefault("dtype", "float32")
    return _call_checked(lambda: cls(**options), where)


def _call_checked(make: Any, where: str) -> Any:
    """Run a Keras constructor or call; turn its complaint about our values into a ConfigError.

    The values come from the user's file and go straight into Keras, whose failure types are
    not documented: a wrong type can raise AttributeError (`padding = 5`), a huge layer the
    backend's out-of-memory error. Any Exception here is the file's, so all become one line.
    """
    try:
        return make()
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"{where}: {message}") from None
    except Exception as exc:
        message = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{where}: {type(exc).__name__}: {message}") from None


def _substitute(value: Any, num_classes: int) -> Any:
    if value == NUM_CLASSES:
        return num_classes
    if isinstance(value, dict):
        return {k: _substitute(v, num_classes) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, num_classes) for v in value]
    return value


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def summary_text(model: keras.Model, line_length: int = 80) -> str:
    """Return `model.summary()` as plain text (no colours), as Keras prints it."""
    lines: list[str] = []
    model.summary(line_length=line_length, print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines).rstrip() + "\n"
