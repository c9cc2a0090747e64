"""Long strips are cut into tiles, trained on, calibrated and scored as one image, and
the exported file, the runtime and the batch scorer stitch the tiles exactly as torch did.

The strips are three generated washers side by side (a conveyor's view of a row of
parts); the patch memory trains without epochs, so the whole file takes seconds.
"""

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anomaly.config import ModelConfig, TrainConfig
from anomaly.inspection.imageio import read_image, save_image
from anomaly.inspection.inspector import Inspector
from anomaly.inspection.layout import Tiling
from anomaly.scoring.local import score_inputs
from anomaly.synthetic.defects import DEFECTS
from anomaly.synthetic.demo import generate_dataset
from anomaly.training.detector import Detector
from anomaly.training.export import export_onnx

pytestmark = pytest.mark.slow  # trains models

SIZE = 64


def _strips(folder, count):
    parts = sorted((folder / "train" / "good").glob("*.png"))
    return [np.concatenate([read_image(p) for p in parts[3 * i : 3 * i + 3]], axis=1) for i in range(count)]


@pytest.fixture(scope="module")
def strip_model(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("strips")
    washers = generate_dataset(
        root / "washers", seed=3, category="washer", size=SIZE, n_train=60, n_test_good=2, n_per_defect=1
    )
    strips = _strips(washers, 20)
    train_dir = root / "train"
    for i, s in enumerate(strips[:16]):
        save_image(train_dir / f"{i:02d}.png", s)
    det = Detector(ModelConfig(kind="patch_memory", image_size=SIZE, memory_size=512), TrainConfig(seed=0))
    det.fit(train_dir, progress=False)
    onnx_path = export_onnx(det, root / "strip.onnx")
    good = strips[16:]
    bad = strips[16].copy()
    right = bad[:, 2 * SIZE :]
    painted, mask = DEFECTS["missing_material"](
        right, np.random.default_rng(0), scale=0.3, region=right.mean(axis=2) > 0.25
    )
    bad[:, 2 * SIZE :] = painted
    return det, onnx_path, good, bad, root


def test_strips_are_tiled_by_default(strip_model):
    det, onnx_path, good, _, _ = strip_model
    views, layout = det._fit(good[0])
    assert isinstance(layout, Tiling) and len(views) == 3
    info = Inspector(onnx_path).info
    assert (info.fit_mode, info.tiles) == ("auto", 1)


def test_tiled_defect_is_found_where_it_is(strip_model):
    det, _, good, bad, _ = strip_model
    maps, scores = det.score(good + [bad])
    assert scores[-1] > max(scores[:-1]) and scores[-1] >= det.image_threshold
    peak_column = np.unravel_index(np.argmax(maps[-1]), maps[-1].shape)[1]
    assert peak_column >= 2 * SIZE  # on the third washer, where the defect was painted
    assert maps[-1].shape == bad.shape[:2]


def test_onnx_runtime_and_batch_stitch_tiles_like_torch(strip_model):
    det, onnx_path, good, bad, root = strip_model
    images = good + [bad]
    t_maps, t_scores = det.score(images)
    o_maps, o_scores = Inspector(onnx_path).score(images)
    assert max(float(np.abs(t - o).max()) for t, o in zip(t_maps, o_maps)) <= 1e-4
    np.testing.assert_allclose(o_scores, t_scores, atol=1e-4)
    folder = root / "to_score"
    for i, img in enumerate(images):
        save_image(folder / f"{i}.png", img)
    score_inputs(folder, onnx_path, root / "out", progress=False)
    with open(root / "out" / "results.csv") as f:
        rows = {r["path"]: float(r["score"]) for r in csv.DictReader(f)}
    batch_scores = [rows[f"{i}.png"] for i in range(len(images))]
    # the PNG round trip quantises the inputs to 8 bits: same verdicts, near-equal scores
    np.testing.assert_allclose(batch_scores, o_scores, atol=0.05)
    thr = det.image_threshold
    assert [s >= thr for s in batch_scores] == [s >= thr for s in o_scores]


def test_pixel_metrics_use_the_tiled_frame(strip_model):
    """A strip's pixel metrics are computed on the frame the tiles cover, not on a
    square the strip was squashed into, for the model folder and the ONNX file alike."""
    from anomaly.evaluation.evaluate import _eval_shape, evaluate, model_grid

    det, onnx_path, good, bad, root = strip_model
    for scorer in (det, Inspector(onnx_path)):
        grid = model_grid(scorer)
        assert grid == (SIZE, "auto", 1)
        assert _eval_shape(SIZE, 3 * SIZE, None, grid) == (SIZE, 3 * SIZE)
        assert _eval_shape(SIZE, 3 * SIZE, SIZE) == (21, SIZE)  # --eval-size: longest side
    data = root / "mvtec"
    for i, img in enumerate(good):
        save_image(data / "test" / "good" / f"{i}.png", img)
    save_image(data / "test" / "dent" / "0.png", bad)
    diff = np.abs(bad - good[0]).max(axis=2) > 1e-6
    save_image(data / "ground_truth" / "dent" / "0_mask.png", diff.astype(np.float32))
    result = evaluate(Inspector(onnx_path), data, progress=False)
    assert result["eval_grid"] == "model working grid"
    assert result["image_auroc"] == 1.0 and result["pixel_auroc"] > 0.9
