"""The README and the guides in docs/ stay true to the files and to the CLI.

Every relative link resolves (the file exists; a `#anchor` names a heading of that file under
GitHub's slug rule), and every `cnnlab ...` command in a fenced shell block parses with the real
argument parser. A command that shows an error on purpose ends with the comment
`# docs: not checked`.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from cnnlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARKER = "# docs: not checked"
SHELL_INFOS = {"", "bash", "sh", "shell"}  # every line may be a command
CONSOLE_INFOS = {"console"}  # only `$ ` lines are commands, the rest is output
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+\1")
_ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")
_PREFIXES = ("cnnlab ", ".venv/bin/cnnlab ")


class Block(NamedTuple):
    path: Path
    info: str
    start: int  # line number of the first line inside the fence (1-based)
    lines: list[str]


def _split(path: Path) -> tuple[list[tuple[int, str]], list[Block]]:
    """The file's prose lines (numbered) and its fenced code blocks."""
    prose: list[tuple[int, str]] = []
    blocks: list[Block] = []
    fence: str | None = None
    current: Block | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(2)
            current = Block(path, match.group(3).lower(), number + 1, [])
        elif fence is not None and current is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                blocks.append(current)
                fence, current = None, None
            else:
                current.lines.append(line)
        else:
            prose.append((number, line))
    assert fence is None, f"{path.name}: a code fence is never closed"
    return prose, blocks


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, - for spaces."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = _split(path)
    seen: Counter[str] = Counter()
    result = set()
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            result.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
            seen[slug] += 1
    return result


def links(paths: Sequence[Path] = DOCS) -> list[tuple[Path, int, str]]:
    found = []
    for path in paths:
        prose, _ = _split(path)
        for number, line in prose:
            for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
                target = match.group(1)
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    found.append((path, number, target))
    return found


class Command(NamedTuple):
    path: Path
    line: int
    text: str  # what follows `cnnlab `


def commands(paths: Sequence[Path] = DOCS) -> list[Command]:
    found = []
    for path in paths:
        _, blocks = _split(path)
        for block in blocks:
            if block.info not in SHELL_INFOS | CONSOLE_INFOS:
                continue
            pending = ""
            for offset, raw in enumerate(block.lines):
                line = pending + raw.strip()
                if line.endswith("\\"):
                    pending = line[:-1].rstrip() + " "
                    continue
                pending = ""
                if block.info in CONSOLE_INFOS:
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                elif line.startswith("$ "):
                    line = line[2:]
                if SKIP_MARKER in line:
                    continue
                line = _ENV_PREFIX.sub("", line)
                for prefix in _PREFIXES:
                    if line.startswith(prefix):
                        found.append(Command(path, block.start + offset, line[len(prefix) :]))
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_github_slug_follows_githubs_rule() -> None:
    predict = "Predict: using the CNN on new images"
    assert github_slug(predict) == "predict-using-the-cnn-on-new-images"
    assert github_slug("Export, and the light ONNX path") == "export-and-the-light-onnx-path"
    assert (
        github_slug('Are the first filters "known good"? The notes\' claim, tested')
        == "are-the-first-filters-known-good-the-notes-claim-tested"
    )
    assert github_slug("One model, many processes (JAX)") == "one-model-many-processes-jax"
    assert github_slug("The `fcn` preset") == "the-fcn-preset"


def test_the_docs_are_there_and_have_links_and_commands() -> None:
    names = {path.name for path in DOCS}
    assert {"README.md", "training.md", "predicting.md", "serving.md", "design.md"} <= names
    assert len(links()) >= 20
    assert len(commands()) >= 15


@pytest.mark.parametrize(
    "path,line,target", links(), ids=[f"{_where(p, n)}:{t}" for p, n, t in links()]
)
def test_every_relative_link_resolves(path: Path, line: int, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    linked = (path.parent / file_part).resolve() if file_part else path
    assert linked.exists(), f"{_where(path, line)}: {target}: no such file"
    if anchor:
        where = f"{_where(path, line)}: {target}"
        assert linked.suffix == ".md", f"{where}: an anchor into a non-Markdown file"
        assert anchor in anchors(linked), (
            f"{_where(path, line)}: {target}: no heading with that anchor in {linked.name}"
        )


@pytest.mark.parametrize(
    "command", commands(), ids=[f"{_where(c.path, c.line)}" for c in commands()]
)
def test_every_cnnlab_command_example_parses(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    args = shlex.split(command.text, comments=True)
    try:
        build_parser().parse_args(args)
    except SystemExit as exit_:
        message = capsys.readouterr().err.strip().splitlines()[-1:]
        where = _where(command.path, command.line)
        pytest.fail(f"{where}: cnnlab {command.text!r} exits {exit_.code}: {message}")


def test_a_marked_command_is_left_out_and_the_rest_is_found(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text(
        "```bash\n"
        f"cnnlab nosuchcommand  {SKIP_MARKER}\n"
        "KERAS_BACKEND=jax cnnlab train \\\n  --epochs 2   # a comment\n"
        "```\n"
        "```console\n$ cnnlab summary\ncnnlab: output, not a command\n```\n"
        "```text\ncnnlab trainer  6,016\n```\n"
    )
    assert [c.text for c in commands([page])] == ["train --epochs 2   # a comment", "summary"]


def test_a_command_that_does_not_parse_is_caught() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split("predict --no-such-flag RUN", comments=True))
