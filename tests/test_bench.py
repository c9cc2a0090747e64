"""The maintained benchmark scripts run (their --quick modes), so they cannot rot."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_quick(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_speed_quick() -> None:
    out = run_quick("speed.py", "--profile")
    row = table_rows(out)[0]  # one row per backend installed; onnxruntime first
    assert row[0].endswith("default.onnx") and row[1:3] == ["fp32", "onnxruntime"] and row[5] == "1.00"
    assert float(row[3]) > 0 and float(row[6]) > 0
    # the folder rate differences two short runs: on a busy machine the quick run may
    # measure no steady rate (nan), which is a benchmark result, not a failure
    for folder in (float(row[7]), float(row[9])):  # results only, with overlays
        assert folder > 0 or math.isnan(folder)
    # the operator split of the onnxruntime row: convolutions among the costliest types,
    # and the memory search's and the calibration's operators on top of them in the sum
    split = {r[0]: float(r[1]) for r in table_rows("| operator" + out.split("| operator")[1])}
    assert 0 < split["Conv"] < split["all kernels"]


@pytest.mark.slow
def test_accuracy_quick() -> None:
    (row,) = table_rows(run_quick("accuracy.py"))
    assert row[0] == "washer"
    assert 0.0 <= float(row[1]) <= 1.0 and 0.0 <= float(row[3]) <= 1.0  # image AUROC, AUPRO
    assert row[6].endswith("of 25") and row[7].endswith("of 12")  # the samples' defects and good parts


@pytest.mark.slow
def test_train_cost_quick() -> None:
    (row,) = table_rows(run_quick("train_cost.py"))
    assert row[0] == "washer x1" and int(row[3]) >= 1 and float(row[6]) > 0


@pytest.mark.slow
def test_dirty_quick() -> None:
    (row,) = table_rows(run_quick("dirty.py"))
    assert row[0] == "washer" and row[1] == "2 (10%)"  # 10% of the 25 sample defects, rounded
    assert row[7].endswith("of 23") and row[-1].endswith("of 2")  # planted images left the test set


def test_planted_copy_moves_defects_out_of_the_test_set(tmp_path) -> None:
    sys.path.insert(0, str(BENCH))
    from dirty import planted_copy

    samples = BENCH.parent / "sample_images" / "washer"
    planted = planted_copy(samples, 0.2, tmp_path / "copy")
    copy = tmp_path / "copy"
    assert len(planted) == 5 and all((copy / "train" / "good" / name).is_file() for name in planted)
    left = [p for p in (copy / "test").glob("*/*") if p.parent.name != "good"]
    masks = list((copy / "ground_truth").glob("*/*_mask.png"))
    assert len(left) == 20 and len(masks) == 20  # the planted images' masks went with them
    assert not planted_copy(samples, 0.0, tmp_path / "clean")


def test_feedback_quick() -> None:
    (row,) = table_rows(run_quick("feedback.py"))
    assert row[0] == "washer" and row[1] == "5 defects + 5 good"
    assert all(0.0 <= float(x) <= 1.0 for x in row[2:6])


def test_a_review_lowers_a_threshold_that_misses_confirmed_defects() -> None:
    sys.path.insert(0, str(BENCH))
    import numpy as np
    from feedback import review_gain

    scores = np.r_[np.linspace(0.1, 0.6, 20), np.linspace(0.7, 0.95, 20)]  # every defect below the threshold 1.0
    labels = np.r_[np.zeros(20, bool), np.ones(20, bool)]
    gain = review_gain(scores, labels, 1.0, confirmed=5, seed=0)
    assert gain["recall_before"] == 0.0 and gain["recall_after"] > 0.5 and gain["fr_after"] == 0.0
