"""`cnnlab data check`: a messy folder's planted problems are named, its odd but valid files
are not, and the exit codes say which problems bias training."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from signs import draw_sign, make_signs

from cnnlab.cli import main
from cnnlab.data.check import (
    NEAR_SIMILARITY,
    NEAR_THRESHOLD,
    Report,
    check_folder,
    fingerprint,
    format_report,
    near_pairs,
)
from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Messy:
    """The folder and what was planted in it (paths relative to the folder)."""

    root: Path
    unreadable: dict[str, str]  # file -> reason
    cross_exact: tuple[str, str]
    cross_near: tuple[str, str]
    within_exact: tuple[str, str]
    odd: dict[str, str]  # valid odd file -> its stored mode
    ignored: tuple[str, ...]


def pictures(seed: int) -> list[Image.Image]:
    """Distinct sign pictures (benchmarks/signs.py), an endless supply by seed."""
    rng = np.random.default_rng(seed)
    return [draw_sign(rng, index % 8) for index in range(64)]


def save_odd(picture: Image.Image, path: Path, kind: str) -> None:
    """A valid file in an unusual mode or format."""
    if kind == "cmyk":
        picture.convert("CMYK").save(path, "JPEG", quality=90)
    elif kind == "png16":
        grey = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(path, "PNG")
    elif kind == "palette":
        palette = picture.quantize(16)
        palette.info["transparency"] = 0
        palette.save(path, "PNG", transparency=0)
    elif kind == "rgba":
        rgba = picture.convert("RGBA")
        rgba.putalpha(180)
        rgba.save(path, "PNG")
    elif kind == "webp":
        picture.save(path, "WEBP", quality=80)
    elif kind == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # stored turned: viewers rotate it 90 degrees clockwise
        picture.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", exif=exif, quality=90)
    else:
        raise ValueError(kind)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Messy:
    """train/ (cat 30 readable, dog 5: imbalanced) and test/ (cat 4, dog 3), with planted
    unreadable files, ignored files, valid odd files and duplicates."""
    root = tmp_path_factory.mktemp("messy")
    supply = iter(pictures(seed=1))
    folders = {name: root / name for name in ("train/cat", "train/dog", "test/cat", "test/dog")}
    for folder in folders.values():
        folder.mkdir(parents=True)

    odd = {
        "train/cat/cmyk.jpg": ("cmyk", "CMYK"),
        "train/cat/deep.png": ("png16", "I;16"),
        "train/cat/palette.png": ("palette", "P"),
        "train/cat/clear.png": ("rgba", "RGBA"),
        "train/cat/photo.webp": ("webp", "RGB"),
        "train/cat/turned.jpg": ("rotated", "RGB"),
    }
    for name, (kind, _) in odd.items():
        save_odd(next(supply), root / name, kind)

    leak = next(supply)
    leak.save(root / "train/cat/leak.png")
    leak.save(root / "test/cat/leak.webp", "WEBP", lossless=True)  # same pixels, other encoding
    original = next(supply)
    original.save(root / "train/dog/original.png")
    copy = original.resize((round(original.width * 0.8), round(original.height * 0.8)))
    copy.save(root / "test/dog/copy.jpg", "JPEG", quality=90)
    twice = next(supply)
    twice.save(root / "train/cat/twice.png")
    twice.save(root / "train/cat/twice.bmp", "BMP")

    # cat: 6 odd + leak + 2 twice = 9, and 21 more; dog: original and 4 more
    for folder, count in (("train/cat", 21), ("train/dog", 4), ("test/cat", 3), ("test/dog", 2)):
        for index in range(count):
            next(supply).save(folders[folder] / f"{index:02d}.jpg", "JPEG", quality=85)

    (root / "train/cat/empty.jpg").write_bytes(b"")
    whole = io.BytesIO()
    next(supply).resize((200, 160)).save(whole, "JPEG", quality=95)
    (root / "train/cat/truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (root / "train/dog/notes.jpg").write_text("meeting notes, not a picture\n")
    (root / "train/cat/README").write_text("cats\n")
    (root / "train/dog/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return Messy(
        root,
        unreadable={
            "train/cat/empty.jpg": "empty",
            "train/cat/truncated.jpg": "truncated",
            "train/dog/notes.jpg": "not an image",
        },
        cross_exact=("train/cat/leak.png", "test/cat/leak.webp"),
        cross_near=("train/dog/original.png", "test/dog/copy.jpg"),
        within_exact=("train/cat/twice.bmp", "train/cat/twice.png"),
        odd={name: mode for name, (_, mode) in odd.items()},
        ignored=("train/cat/README", "train/dog/.DS_Store"),
    )


@pytest.fixture(scope="module")
def report(messy: Messy) -> Report:
    return check_folder(messy.root)


def rel(root: Path, path: str | Path) -> str:
    return Path(path).relative_to(root).as_posix()


def test_every_planted_unreadable_file_is_named_with_its_reason(
    messy: Messy, report: Report
) -> None:
    found = {rel(messy.root, u.file): u.reason for u in report.unreadable}
    assert found == messy.unreadable


def test_duplicates_are_the_planted_pairs_and_no_others(messy: Messy, report: Report) -> None:
    found = {
        (tuple(sorted(rel(messy.root, f) for f in d.files)), d.exact, d.cross_split)
        for d in report.duplicates
    }
    assert found == {
        (tuple(sorted(messy.cross_exact)), True, True),
        (tuple(sorted(messy.cross_near)), False, True),
        (messy.within_exact, True, False),
    }
    near = next(d for d in report.duplicates if not d.exact)
    assert near.distance <= NEAR_THRESHOLD and near.similarity >= NEAR_SIMILARITY
    assert near.splits == ("train", "test")


def test_odd_but_valid_files_are_readable_counted_and_in_no_problem(
    messy: Messy, report: Report
) -> None:
    train = report.splits[0]
    assert [s.name for s in report.splits] == ["train", "test"]
    assert train.class_counts == {"cat": 30, "dog": 5}
    assert train.files == 30 + 5 + 3  # the unreadable ones are image files too
    for mode in ("CMYK", "I;16", "P", "RGBA"):
        assert train.modes.get(mode) == 1, train.modes
    assert train.formats["WEBP"] == 1 and train.formats["BMP"] == 1
    named = json.dumps(report.problems())
    for name in messy.odd:
        assert name not in named
    for name in messy.ignored:
        assert name not in named


def test_an_exif_turned_picture_is_measured_and_compared_upright(
    messy: Messy, tmp_path: Path
) -> None:
    from cnnlab.data.check import _examine  # one file's look, without a folder around it

    stored = Image.open(messy.root / "train/cat/turned.jpg").size
    assert stored[0] != stored[1]
    assert _examine(messy.root / "train/cat/turned.jpg", 10**8).size == (stored[1], stored[0])

    supply = iter(pictures(seed=4))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(3):
            next(supply).save(tmp_path / name / f"{index}.png")
    upright = Image.open(tmp_path / "a" / "0.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "b" / "turned.png", exif=exif)
    (pair,) = check_folder(tmp_path).duplicates
    assert pair.exact and [p.name for p in pair.files] == ["0.png", "turned.png"]


def test_a_large_jpeg_is_drafted_yet_checked_whole(tmp_path: Path) -> None:
    """Decoded at 1/4 scale: a truncated one is still found, its size is the stored one, a
    byte copy is an exact duplicate and a PNG of its pixels a near one."""
    supply = iter(pictures(seed=8))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(3):
            next(supply).save(tmp_path / name / f"{index}.png")
    big = next(supply).resize((1280, 1024), Image.Resampling.BICUBIC)
    big.save(tmp_path / "a" / "big.jpg", "JPEG", quality=90)
    data = (tmp_path / "a" / "big.jpg").read_bytes()
    (tmp_path / "b" / "copy.jpg").write_bytes(data)
    Image.open(tmp_path / "a" / "big.jpg").save(tmp_path / "b" / "pixels.png")
    (tmp_path / "b" / "cut.jpg").write_bytes(data[: len(data) * 3 // 4])
    report = check_folder(tmp_path)
    assert [(u.file.name, u.reason) for u in report.unreadable] == [("cut.jpg", "truncated")]
    pairs = {(d.files[0].name, d.files[1].name): d.exact for d in report.duplicates}
    assert pairs == {("big.jpg", "copy.jpg"): True, ("big.jpg", "pixels.png"): False}
    (split,) = report.splits
    assert split.width is not None and split.width.max == 1280


def test_ignored_files_are_named_not_errors_and_imbalance_is_a_warning(
    messy: Messy, report: Report
) -> None:
    assert sorted(rel(messy.root, p) for p in report.ignored) == sorted(messy.ignored)
    assert report.imbalanced and report.balance.ratio == 6
    assert report.balance.largest == ("cat", 30) and report.balance.smallest == ("dog", 5)
    assert "--class-weight auto" in report.balance.suggestion
    assert report.errors == 3 + 2  # unreadable, cross-split duplicates
    assert report.warnings == 1 + 1  # a duplicate within train, the imbalance
    assert report.exit_code == 1


def test_cli_json_names_each_problem_and_exits_1(
    messy: Messy, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["data", "check", str(messy.root), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["layout"] == "splits" and out["classes"] == ["cat", "dog"]
    assert set(out["splits"]) == {"train", "test"}
    assert out["splits"]["train"]["classes"] == {"cat": 30, "dog": 5}
    assert set(out["splits"]["train"]["width"]) == {"min", "median", "max"}
    by_kind: dict[str, list[dict[str, object]]] = {}
    for problem in out["problems"]:
        by_kind.setdefault(str(problem["kind"]), []).append(problem)
    assert {rel(messy.root, str(p["file"])): p["reason"] for p in by_kind["unreadable"]} == (
        messy.unreadable
    )
    duplicates = {
        tuple(sorted(rel(messy.root, f) for f in p["files"])): p  # type: ignore[attr-defined]
        for p in by_kind["duplicate"]
    }
    exact = duplicates[tuple(sorted(messy.cross_exact))]
    assert exact["exact"] is True and exact["distance"] == 0
    assert exact["severity"] == "error" and exact["splits"] == ["train", "test"]
    near = duplicates[tuple(sorted(messy.cross_near))]
    assert near["exact"] is False and near["severity"] == "error"
    assert duplicates[messy.within_exact]["severity"] == "warning"
    (imbalance,) = by_kind["imbalance"]
    assert imbalance["ratio"] == 6.0 and imbalance["smallest"] == {"class": "dog", "images": 5}
    assert sorted(rel(messy.root, p) for p in out["ignored"]) == sorted(messy.ignored)
    assert out["errors"] == 5 and out["warnings"] == 2


def test_cli_table_groups_the_problems_for_people(
    messy: Messy, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["data", "check", str(messy.root)])
    out = capsys.readouterr().out
    assert code == 1
    sections = [
        "errors: unreadable files",
        "errors: duplicates across splits",
        "warnings: duplicates within a split",
        "warnings: class imbalance",
        "ignored: not images",
    ]
    positions = [out.index(section) for section in sections]
    assert positions == sorted(positions)
    for name in [*messy.unreadable, *messy.cross_exact, *messy.cross_near, *messy.ignored]:
        assert name in out
    for name in messy.odd:
        assert name not in out
    assert "5 errors, 2 warnings" in out
    assert "CMYK 1" in out and "I;16 1" in out


def test_a_clean_class_folder_is_one_split_all_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_signs(tmp_path / "signs", 64, seed=3, layout="flat")
    code = main(["data", "check", str(tmp_path / "signs"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["problems"]
    assert out["layout"] == "classes" and list(out["splits"]) == ["all"]
    assert out["problems"] == [] and out["errors"] == 0 and out["ignored"] == []
    assert out["balance"]["ratio"] == 1.0  # 64 pictures over 8 classes, in turn
    assert out["splits"]["all"]["images"] == 64


def test_warnings_alone_exit_0_and_a_flat_folder_finds_duplicates_within_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    supply = iter(pictures(seed=2))
    for name, count in (("a", 14), ("b", 3)):
        (tmp_path / name).mkdir()
        for index in range(count):
            next(supply).save(tmp_path / name / f"{index}.png")
    (tmp_path / "b" / "0.png").replace(tmp_path / "b" / "first.png")
    Image.open(tmp_path / "a" / "0.png").save(tmp_path / "b" / "0.bmp")  # same pixels
    code = main(["data", "check", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "a/0.png  =  b/0.bmp  (exact: same pixels; labelled a and b)" in out
    assert "0 errors, 2 warnings" in out  # the duplicate, 14 a against 4 b (3.5x)


def test_a_test_copy_is_paired_with_its_train_original_even_beside_a_closer_test_copy(
    tmp_path: Path,
) -> None:
    supply = iter(pictures(seed=9))
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for index in range(2):
                next(supply).save(tmp_path / split / name / f"{index}.png")
    original = next(supply)
    original.save(tmp_path / "train/a/original.png")
    small = original.resize((original.width * 4 // 5, original.height * 4 // 5))
    small.save(tmp_path / "test/a/copy1.jpg", "JPEG", quality=80)
    brighter = Image.open(tmp_path / "test/a/copy1.jpg").point(lambda v: min(255, v + 2))
    brighter.save(tmp_path / "test/a/copy2.png")  # nearer copy1 than the original
    found = {
        (d.files[0].name, d.files[1].name, d.cross_split) for d in check_folder(tmp_path).duplicates
    }
    assert found == {
        ("original.png", "copy1.jpg", True),
        ("original.png", "copy2.png", True),
        ("copy1.jpg", "copy2.png", False),
    }


def test_a_missing_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["data", "check", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("cnnlab: error:") and "nowhere" in line
    with pytest.raises(CnnlabError, match=r"0\.\.32"):
        check_folder(tmp_path, near_threshold=40)


def test_the_near_threshold_matches_no_distinct_signs_and_finds_their_copies() -> None:
    originals = pictures(seed=5) + pictures(seed=6) + pictures(seed=7)
    prints = [fingerprint(p) for p in originals]
    candidates = near_pairs([p.hash for p in prints], NEAR_THRESHOLD)
    confirmed = [
        (i, j)
        for i, j, _ in candidates.tolist()
        if float(prints[i].thumbnail @ prints[j].thumbnail) >= NEAR_SIMILARITY
    ]
    assert confirmed == []
    rng = np.random.default_rng(0)
    found = 0
    for picture, original in zip(originals, prints, strict=True):
        scale = rng.uniform(0.5, 1.5)
        size = (round(picture.width * scale), round(picture.height * scale))
        encoded = io.BytesIO()
        picture.resize(size).save(encoded, "JPEG", quality=int(rng.integers(60, 96)))
        copy = fingerprint(Image.open(encoded).convert("RGB"))
        found += (copy.hash ^ original.hash).bit_count() <= NEAR_THRESHOLD and float(
            copy.thumbnail @ original.thumbnail
        ) >= NEAR_SIMILARITY
    assert found >= 0.95 * len(originals)


@pytest.mark.parametrize("threshold", [0, 3, 8, 13])
def test_bucketed_pairs_equal_every_pair_compared(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = rng.integers(0, 64, (400, 16))
    counts = rng.integers(0, 18, 400)
    hashes = []
    for row, count in zip(flips, counts, strict=True):  # clusters around 40 centres
        value = int(base[rng.integers(40)])
        for bit in row[:count]:
            value ^= 1 << int(bit)
        hashes.append(value)
    found = {tuple(p) for p in near_pairs(hashes, threshold).tolist()}
    expected = {
        (i, j, (hashes[i] ^ hashes[j]).bit_count())
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if (hashes[i] ^ hashes[j]).bit_count() <= threshold
    }
    assert found == expected and (threshold == 0 or expected)


def test_format_report_shows_the_counts_per_class_and_split(messy: Messy, report: Report) -> None:
    text = format_report(report)
    header = next(line for line in text.splitlines() if line.startswith("class"))
    assert header.split() == ["class", "train", "test"]
    assert next(line for line in text.splitlines() if line.startswith("dog")).split() == [
        "dog",
        "5",
        "3",
    ]
