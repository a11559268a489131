"""`cnnlab bench --quick` on the real data: it runs and leaves a well-formed table and JSON.

No timing is asserted: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cnnlab.bench import format_table, run_bench, write_json

SYSTEM = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SYSTEM.is_dir(), reason="dataset-fashion-mnist is not installed"),
]


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    # float32 forced: the figure the speed goal is about (a CPU without bfloat16).
    return run_bench(quick=True, data_dir=str(SYSTEM), precision="float32")


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_the_results_hold_every_section(results: dict[str, Any]) -> None:
    assert {"machine", "settings", "model", "peak", "training", "time_to_accuracy"} <= set(results)
    assert {"inference", "startup", "notes"} <= set(results)
    assert results["settings"]["quick"] is True
    machine = results["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["date"]
    assert "keras" in machine["versions"]
    assert machine["architecture"] and isinstance(machine["cpu_instruction_sets"], list)
    assert results["precision"]["requested"] == results["precision"]["policy"] == "float32"
    cnnlab_row = next(row for row in results["training"] if row["contender"] == "cnnlab")
    assert cnnlab_row["note"].endswith("float32")


def test_a_bad_precision_is_refused_before_anything_runs() -> None:
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="precision 'fp8'"):
        run_bench(quick=True, precision="fp8")


def test_flops_are_counted_from_the_seed_model(results: dict[str, Any]) -> None:
    model = results["model"]
    assert model["params"] == 73_834
    by_layer = model["forward_flops_by_layer"]
    assert len(by_layer) == 5  # three Conv2D and two Dense layers
    # conv2d_1: 12x12 outputs x 64 filters x (3x3x64) taps, 2 FLOPs per multiply-accumulate
    assert 2 * 12 * 12 * 64 * 3 * 3 * 64 in by_layer.values()
    assert model["forward_flops_per_image"] == sum(by_layer.values())
    assert model["train_flops_per_image"] == 3 * model["forward_flops_per_image"]


def test_training_ratios_agree_with_the_throughputs(results: dict[str, Any]) -> None:
    rows = {row["contender"]: row for row in results["training"]}
    assert {"cnnlab", "keras"} <= set(rows)
    assert ("torch" in rows) == any(n.startswith("torch") for n in results["machine"]["versions"])
    keras_speed = rows["keras"]["images_per_s"]
    peak = results["peak"]["gflops"]
    assert _positive(peak)
    for row in rows.values():
        assert row["params"] == 73_834  # the PyTorch twin has the same parameters
        for key in ("images_per_s", "gflops", "percent_of_peak", "peak_rss_mib"):
            assert _positive(row[key]), key
        assert row["ratio_to_keras"] == pytest.approx(row["images_per_s"] / keras_speed)
        flops = row["images_per_s"] * results["model"]["train_flops_per_image"]
        assert row["gflops"] == pytest.approx(flops / 1e9)
        assert row["percent_of_peak"] == pytest.approx(100 * row["gflops"] / peak)
    assert rows["keras"]["ratio_to_keras"] == pytest.approx(1.0)


def test_time_to_accuracy_inference_and_startup_are_measured(results: dict[str, Any]) -> None:
    tta = results["time_to_accuracy"]
    assert [row["recipe"] for row in tta["rows"]] == ["seed", "default"]
    for row in tta["rows"]:
        assert 1 <= row["epochs"] <= tta["max_epochs"]
        assert _positive(row["seconds"]) and _positive(row["eval_seconds"])
        assert 0 < row["best_test_accuracy"] <= 1
        assert row["reached"] == (row["best_test_accuracy"] >= tta["target"])
    inference = results["inference"]["rows"]
    assert {row["format"] for row in inference} >= {"keras"}
    for row in inference:
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
        assert _positive(row["batch_images_per_s"])
    assert {row["command"] for row in results["startup"]} >= {"import cnnlab", "cnnlab --help"}
    assert all(_positive(row["median_s"]) for row in results["startup"])


def test_the_table_and_json_are_written(results: dict[str, Any], tmp_path: Path) -> None:
    table = format_table(results)
    for heading in ("images/s", "x plain Keras", "% of peak", "peak RSS (MiB)", "p99 (ms)"):
        assert heading in table
    for row in results["training"]:
        assert row["label"] in table
    assert results["machine"]["cpu"] in table  # every figure says which CPU it came from
    assert "float32 (forced with --precision float32)" in table
    assert json.loads(write_json(results, tmp_path).read_text()) == json.loads(json.dumps(results))


def test_the_script_needs_no_heavy_import() -> None:
    code = "import sys, cnnlab.bench; print('tensorflow' in sys.modules, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
