"""`cnnlab visualize KIND ...` end to end on a tiny trained run: every kind writes a real PNG."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import make_images

from cnnlab import cli
from cnnlab.visualize import KINDS


@pytest.fixture(scope="module")
def run_copy(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared tiny run, so pictures written into it do not leak to other tests."""
    target = tmp_path_factory.mktemp("vis") / "run"
    shutil.copytree(tiny_run, target)
    return target


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "left-bar.png"
    Image.fromarray(make_images(np.array([2]), np.random.default_rng(0))[0]).save(path)
    return path


def _check_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert 200 <= image.width <= 8000 and 150 <= image.height <= 8000
        gray = np.asarray(image.convert("L"), dtype=np.float64)
    assert gray.std() > 5  # not blank


def test_cli_offers_every_kind_the_library_draws() -> None:
    commands = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    kind = next(a for a in commands.choices["visualize"]._actions if a.dest == "kind")
    assert tuple(kind.choices) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_a_png(
    kind: str, run_copy: Path, picture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind in ("convpool", "preprocess"):
        out = run_copy / f"{kind}.png"  # these need no run: only an image
        argv = ["visualize", kind, str(picture), "--out", str(out)]
    elif kind in ("features", "gradcam"):
        argv = ["visualize", kind, str(run_copy), str(picture)]
        out = run_copy / f"{kind}-left-bar.png"
    else:
        argv = ["visualize", kind, str(run_copy)]
        out = run_copy / f"{kind}.png"
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out
    _check_png(out)
    if kind == "confusion":  # the most-confused pairs, as text, agree with metrics.json
        metrics = json.loads((run_copy / "metrics.json").read_text())
        perfect = metrics["test_accuracy"] == 1.0
        assert ("no class was mistaken" in captured.out) == perfect
        assert ("->" in captured.out) == (not perfect)


def test_filters_init_sets(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["visualize", "filters", str(run_copy), "--init-sets"]) == 0
    _check_png(run_copy / "filters-init.png")


def test_model_picture_of_an_architecture(tmp_path: Path) -> None:
    out = tmp_path / "seed.png"
    assert cli.main(["visualize", "model", "basic_cnn", "--out", str(out)]) == 0
    _check_png(out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["visualize", "features", "{run}"], "needs an image"),
        (["visualize", "history", "{missing}"], "not a run folder"),
        (["visualize", "features", "{run}", "{missing}"], "missing"),
        (["visualize", "filters", "{run}", "--layer", "nope"], "nope"),
    ],
)
def test_bad_visualize_requests(
    argv: list[str], message: str, run_copy: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = [a.format(run=run_copy, missing=tmp_path / "missing") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("cnnlab: error:") == 1 and message in err and "Traceback" not in err
