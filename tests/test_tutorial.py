"""The tutorial notebook (docs/tutorial.ipynb) runs top to bottom and shows what it claims.

It is executed with its `quick` setting (a few thousand images, one or two epochs) in a fresh
folder; every figure cell must show a picture, and the text cells' claims about the notes'
model (73,834 parameters, 28x28 after the first conv, 2x2x32 before Flatten) must be printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
NOTEBOOK = DOCS / "tutorial.ipynb"
TWIN = DOCS / "tutorial.py"

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")


def _code(notebook: Any) -> list[str]:
    return [cell.source.strip() for cell in notebook.cells if cell.cell_type == "code"]


def test_the_notebook_and_its_plain_text_twin_say_the_same() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    twin = jupytext.read(TWIN)
    assert _code(notebook) == _code(twin)
    assert [c.source.strip() for c in notebook.cells if c.cell_type == "markdown"] == [
        c.source.strip() for c in twin.cells if c.cell_type == "markdown"
    ]


def test_the_committed_notebook_has_its_outputs() -> None:
    """It reads well on a code host without running: every figure is there."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(_has_picture(cell) for cell in _figure_cells(notebook))
    assert not [
        o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"
    ]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    workdir = tmp_path_factory.mktemp("tutorial")
    os.environ["CNNLAB_TUTORIAL_SETTING"] = "quick"
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        )
        client.execute()
    finally:
        del os.environ["CNNLAB_TUTORIAL_SETTING"]
    return notebook


def _text(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "".join(parts)


def _figure_cells(notebook: Any) -> list[Any]:
    """The cells that draw: they call show(...) or display(...)."""
    return [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code"
        and ("show(" in cell.source or "display(" in cell.source)
        and "def show" not in cell.source
    ]


def _has_picture(cell: Any) -> bool:
    return any(
        {"image/png", "image/jpeg"} & set(output.get("data", {}))
        for output in cell.get("outputs", [])
    )


@pytest.mark.integration
def test_it_runs_top_to_bottom_in_the_quick_setting(executed: Any) -> None:
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
    assert "setting 'quick'" in _text(executed.cells[2])


@pytest.mark.integration
def test_every_figure_cell_shows_a_picture(executed: Any) -> None:
    cells = _figure_cells(executed)
    assert len(cells) >= 11
    missing = [cell.source.splitlines()[0] for cell in cells if not _has_picture(cell)]
    assert not missing


@pytest.mark.integration
def test_the_notes_model_and_its_corrected_shapes_are_shown(executed: Any) -> None:
    text = "\n".join(_text(cell) for cell in executed.cells if cell.cell_type == "code")
    assert "Total params: 73,834" in text
    assert (
        "(28, 28, 64), (14, 14, 64), (12, 12, 64), (6, 6, 64), (4, 4, 32), (2, 2, 32), (128,)"
        in text
    )
    assert "2x2x32 = 128" in text  # the explanation corrects the notes' 3x3x32
    assert "Keras Conv2D agrees: True" in text
    assert "already finished" in text  # re-running a finished run does nothing


@pytest.mark.integration
def test_no_tensorflow_notices_reach_the_reader(executed: Any) -> None:
    """TensorFlow sets its logger to INFO in a notebook when it first logs, so a level set
    beforehand is lost; the tutorial filters instead, and no notice may show."""
    text = "\n".join(_text(cell) for cell in executed.cells if cell.cell_type == "code")
    assert "WARNING:tensorflow" not in text
    assert "retracing" not in text


@pytest.mark.integration
def test_one_conv_output_is_summed_by_hand(executed: Any) -> None:
    """Issue 29: NumPy's sum of patch x kernel + bias, then ReLU, equals explain_cell's and
    Keras' output for one edge cell of the trained model's first convolution (the cell
    asserts it; its printout says so)."""
    text = "\n".join(_text(cell) for cell in executed.cells if cell.cell_type == "code")
    assert "over the 3x3 window of the input channel, plus the bias, then relu" in text
    assert "they agree within" in text
