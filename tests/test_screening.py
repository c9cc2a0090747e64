"""Screening a dirty "good" folder (anomaly.training.screening): the outlier rule, the
memory surgery, and a detector that finds a defective part planted among its good ones."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly.training.networks import PatchMemory
from anomaly.training.screening import (
    LISTED_Z,
    find_suspects,
    forget_images,
    labelled_cut,
    memory_owner,
    robust_z,
    to_summary,
)

ROOT = Path(__file__).resolve().parents[1]
WASHER = ROOT / "sample_images" / "washer"


def test_robust_z_picks_out_the_outlier_and_is_not_moved_by_it():
    rng = np.random.default_rng(0)
    good = np.exp(rng.normal(0.0, 0.2, 200))
    z = robust_z(np.append(good, 5.0))
    assert z[-1] > 6  # log(5) / 0.2 ~ 8 robust standard deviations out
    assert np.abs(z[:-1]).max() < 3.5
    # the yardstick is the median and MAD: one more extreme outlier leaves the others' z nearly as it was
    assert np.allclose(robust_z(np.append(good, 500.0))[:-1], z[:-1], atol=0.05)


def test_a_clean_log_normal_folder_leaves_out_next_to_nothing():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = np.exp(rng.normal(-0.5, 0.3, 250))
        left = [s for s in find_suspects([str(k) for k in range(250)], scores, 3.5) if s.left_out]
        assert len(left) <= 1


def test_suspects_are_ordered_listed_and_left_out_by_their_own_thresholds():
    scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.15, 0.85, 1.0, 3.0, 1.3])
    names = [f"img{k}.png" for k in range(len(scores))]
    suspects = find_suspects(names, scores, left_out_z=3.5)
    assert [s.path for s in suspects][0] == "img8.png"
    assert all(s.z > LISTED_Z for s in suspects)
    assert [s.path for s in suspects if s.left_out] == ["img8.png"]
    assert not any(s.left_out for s in find_suspects(names, scores, left_out_z=0))
    summary = to_summary(suspects, threshold_factor=2.0)
    assert summary[0]["score"] == pytest.approx(1.5) and json.dumps(summary)


def _z_scores(z: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Scores whose robust z on the good scores' yardstick is `z` (good: log-normal, sigma 0.3)."""
    logs = np.log(good)
    spread = 1.4826 * np.median(np.abs(logs - np.median(logs)))
    return np.exp(np.median(logs) + z * spread)


def test_labelled_defects_lower_the_cut_to_where_they_become_likelier_than_good_parts():
    rng = np.random.default_rng(2)
    good = np.exp(rng.normal(0.0, 0.3, 400))
    # defects centred 5 robust deviations out with unit spread: equal densities at z 2.5
    defects = _z_scores(rng.normal(5.0, 1.0, 2000), good)
    assert labelled_cut(good, defects, 3.5) == pytest.approx(2.5, abs=0.1)
    # a training image at z 3 (kept by the plain rule) is left out once the labels are known
    scores = np.append(good, _z_scores(np.array([3.0]), good))
    names = [str(k) for k in range(scores.size)]
    assert not find_suspects(names, scores, 3.5)[0].left_out
    assert find_suspects(names, scores, labelled_cut(good, defects, 3.5))[0].left_out


def test_labels_never_cut_into_the_good_parts_nor_raise_the_cut():
    rng = np.random.default_rng(3)
    good = np.exp(rng.normal(0.0, 0.3, 400))
    # defects the model scores like good parts: nothing to sharpen
    assert labelled_cut(good, good[:20] * 1.01, 3.5) == 3.5
    # defects barely above the good ones: the crossing would sit in the good bulk; floored at LISTED_Z
    assert labelled_cut(good, _z_scores(rng.normal(2.5, 0.3, 50), good), 3.5) == LISTED_Z
    # defects far out: their crossing lies beyond suspect_z, which stays
    assert labelled_cut(good, _z_scores(rng.normal(12.0, 1.0, 50), good), 3.5) == 3.5
    # one label, or none
    assert LISTED_Z <= labelled_cut(good, _z_scores(np.array([4.0]), good), 3.5) <= 3.5
    assert labelled_cut(good, np.array([]), 3.5) == 3.5


def test_equal_scores_flag_nothing():
    assert find_suspects(["a", "b", "c", "d"], np.ones(4), 3.5) == []


def test_memory_owner_maps_rows_to_images_through_their_views():
    class L:
        def __init__(self, views: int) -> None:
            self.views = views

    layouts = [L(1), L(3), L(2)]  # views 0 | 1 2 3 | 4 5
    assert memory_owner(layouts, np.array([0, 1, 3, 4, 5, 2])).tolist() == [0, 1, 1, 2, 2, 1]  # type: ignore[arg-type]


def test_forgotten_patches_are_no_longer_found_and_the_memory_keeps_its_size():
    torch.manual_seed(0)
    memory = PatchMemory(channels=8, size=16, neighbourhood=1)
    rows = torch.randn(16, 8)
    memory.remember(rows)
    owner = np.repeat([0, 1, 2, 3], 4)
    query = rows[4].view(1, 8, 1, 1)  # a patch of image 1
    assert float(memory(query)) == pytest.approx(0.0, abs=1e-3)
    assert forget_images(memory, owner, {1}) == 4
    assert memory.memory.shape == (16, 8)
    assert float(memory(query)) > 0.5
    kept = rows[8].view(1, 8, 1, 1)  # a patch of image 2 is still there
    assert float(memory(kept)) == pytest.approx(0.0, abs=1e-3)
    assert forget_images(memory, owner, set()) == 0


def test_model_details_name_the_suspects():
    from anomaly.ui.model_info import _suspects_text

    listed = json.dumps([{"path": "train/good/a.png", "score": 2.5, "left_out": True}])
    text = _suspects_text(listed)
    assert "1 stood out, 1 left out" in text and "train/good/a.png (2.50)" in text
    assert _suspects_text("[]") == "none stood out"
    assert "not checked" in _suspects_text("")


@pytest.mark.slow
def test_a_defective_part_hidden_among_the_good_ones_is_listed_left_out_and_reported(tmp_path):
    """The bundled washer folder with one cracked part moved into train/good: training
    names it first among the suspects, leaves it out, and shows it in suspects.html and
    in the exported file's metadata. The other test washers, as an inspector confirmed
    them in the dashboard and exported them (a labelled folder of mask-less defects),
    are given as `--defects` and set the left-out cut (`labelled_cut`), within its
    bounds: the dashboard's verdicts sharpen the split."""
    from anomaly.cli import main
    from anomaly.inspection.inspector import Inspector
    from anomaly.ui.feedback import DecisionStore, labelled_zip

    data = tmp_path / "washer"
    shutil.copytree(WASHER / "train", data / "train")
    planted = sorted((WASHER / "test" / "crack").glob("*.png"))[0]
    shutil.copy(planted, data / "train" / "good" / "planted_crack.png")
    store, images = DecisionStore(tmp_path / "run"), {}
    for k, path in enumerate(sorted(p for p in (WASHER / "test").rglob("*.png") if p != planted)):
        decision = "good" if path.parent.name == "good" else "defect"
        rel = path.relative_to(WASHER / "test").as_posix()
        store.record(f"k{k}", rel, decision, verdict="FAIL", score=1.0, threshold=1.0, model="m.onnx", model_digest="d")
        images[f"k{k}"] = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(labelled_zip(store.load(), images, name="labelled"))) as zf:
        zf.extractall(tmp_path)
    labelled = tmp_path / "labelled"
    defects_confirmed = len(list((labelled / "test" / "defect").glob("*.png")))
    out, onnx = tmp_path / "model", tmp_path / "model.onnx"
    code = main(
        [
            "train",
            str(data),
            "--out",
            str(out),
            "--export",
            str(onnx),
            "--quiet",
            "--epochs",
            "4",
            "--image-size",
            "128",
            "--defects",
            str(labelled),
        ]
    )
    assert code == 0
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert defects_confirmed > 0 and summary["labelled_defects"]["defective"] == defects_confirmed
    assert LISTED_Z <= summary["left_out_z"] <= 3.5
    suspects = summary["suspects"]
    assert suspects[0]["path"] == "train/good/planted_crack.png", suspects
    assert suspects[0]["left_out"] and summary["left_out"] >= 1
    report = (out / "suspects.html").read_text()
    assert "planted_crack.png" in report and "<img" in report
    meta = json.loads(Inspector(onnx).info.metadata["train_suspects"])
    assert meta[0]["path"] == "train/good/planted_crack.png"
