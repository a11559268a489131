"""The layout DESIGN.md promises, checked: data flows one way and no module imports in a circle.

Every `import cnnlab...` is counted, the lazy ones inside functions too: a lazy import hides a
circle from Python's import machinery, not from a reader.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlab"

# Each module's stage; a module may import its own stage or a lower one, never a higher one.
# A key names a package or a module (dotted); the longest key that prefixes a module wins, so a
# stage package may hold a lower-stage module (data.pipeline needs Keras, data.idx does not).
STAGES: dict[str, int] = {
    # foundations: no knowledge of runs or training
    "_version": 0,
    "errors": 0,
    "_io": 0,
    "_cpu": 0,
    "monitoring": 0,
    "calibration": 0,  # ECE, temperature scaling, the unsure threshold: numpy and scipy only
    "config": 1,
    "_backend": 1,
    "data": 1,  # sources, IDX, datasets, image decoding, image folders
    "model": 1,  # architectures, layers, kernels, the builder, the shape arithmetic
    "prediction.preprocess": 1,  # a picture's way to a model input: no model, no run
    # the run folder, read and written through one class
    "runs": 2,
    "data.pipeline": 2,
    "data.feed": 2,  # what training and evaluation are fed: arrays or a streamed folder
    "training.callbacks": 2,
    "training.distributed": 2,  # where a process stands among those training one model
    "tracking": 2,  # TensorBoard event files and MLflow, written from a run folder
    # the only writer of a run folder's model
    "training": 3,
    # readers of a run folder: never import training
    "evaluation": 4,
    "prediction": 4,
    "export": 4,
    "visualize": 4,
    "serve": 4,
    "catalog": 4,  # the runs under a runs folder: listed, the latest found, compared
    # measures training itself
    "bench": 5,
    "training.sweep": 5,  # many trainings and the winner's evaluation
    # the front doors
    "cli": 6,
    "__main__": 6,
    "__init__": 6,
}
TOP_LEVEL_LIMIT = 15
"""Modules on the ground floor (issue 26): the rest live in a package per stage."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


def _imports() -> dict[str, set[str]]:
    """cnnlab module -> the cnnlab modules it imports (top-level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("cnnlab."):
                    found.add(node.module.removeprefix("cnnlab."))
                elif node.module == "cnnlab":
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(
                    a.name.removeprefix("cnnlab.")
                    for a in node.names
                    if a.name.startswith("cnnlab.")
                )
        graph[name] = {m for m in found if m != name}
    return graph


def _stage(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in STAGES:
            return STAGES[key]
    pytest.fail(f"cnnlab.{module} has no stage in tests/test_architecture.py: add it")


def test_no_module_imports_a_stage_above_it() -> None:
    upward = [
        f"cnnlab.{module} (stage {_stage(module)}) imports cnnlab.{target} (stage {_stage(target)})"
        for module, targets in _imports().items()
        for target in targets
        if target not in ("__version__",) and _stage(target) > _stage(module)
    ]
    assert not upward, "\n".join(upward)


def test_readers_of_a_run_folder_never_import_training() -> None:
    readers = ("evaluation", "prediction", "export", "visualize", "serve")
    offenders = [
        f"cnnlab.{module} imports cnnlab.{target}"
        for module, targets in _imports().items()
        if module.split(".")[0] in readers
        for target in targets
        if target.split(".")[0] == "training"
    ]
    assert not offenders, "\n".join(offenders)


def test_the_ground_floor_is_small_and_stages_are_packages() -> None:
    top = sorted(path.stem for path in SRC.glob("*.py"))
    assert len(top) <= TOP_LEVEL_LIMIT, f"{len(top)} top-level modules: {top}"
    for package in ("data", "model", "training", "prediction", "serve", "visualize", "bench"):
        assert (SRC / package / "__init__.py").is_file(), package
    # test photos are generated outside the runtime library
    assert not (SRC / "photoset.py").exists()


def test_the_version_lives_on_the_ground_floor() -> None:
    import cnnlab
    from cnnlab._version import __version__

    assert cnnlab.__version__ == __version__
    tree = ast.parse((SRC / "_version.py").read_text(encoding="utf-8"))
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_there_is_no_import_circle() -> None:
    graph = {m: {t for t in ts if t in _all_modules()} for m, ts in _imports().items()}
    # a package's __init__ re-exports its own modules; that is not a circle
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not (module.startswith(t + ".") or t == module)}
    visiting: list[str] = []
    done: set[str] = set()
    circles: list[str] = []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            circles.append(" -> ".join([*visiting[visiting.index(module) :], module]))
            return
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert not circles, "\n".join(circles)


def _all_modules() -> set[str]:
    return {_module_name(path) for path in SRC.rglob("*.py")}


def test_the_run_folder_file_names_are_spelled_once() -> None:
    names = ("config.toml", "run.json", "model.keras", "history.csv", "metrics.json", "summary.txt")
    spelled = {
        (path.relative_to(SRC).as_posix(), name)
        for path in SRC.rglob("*.py")
        if path.name != "runs.py"
        for name in names
        if re.search(rf'/\s*"{re.escape(name)}"', path.read_text(encoding="utf-8"))  # a / "x" path
    }
    assert not spelled, f"spell these through cnnlab.runs instead: {sorted(spelled)}"
