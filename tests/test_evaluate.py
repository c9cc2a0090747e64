"""`evaluate` on labelled folders: MVTec AD and MVTec AD 2 layouts, and defect images
without a ground-truth mask."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anomaly.evaluation.evaluate import evaluate
from anomaly.inspection.imageio import save_image

SIZE = 32


class BrightnessScorer:
    """Heatmap = the image's brightness, score = its maximum: a bright square is a defect."""

    image_threshold = 0.5
    pixel_threshold = 0.5

    def score(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        maps = [img.mean(axis=2) for img in images]
        return maps, np.array([float(m.max()) for m in maps])


def _part(path: Path, square: tuple[int, int] | None = None) -> None:
    img = np.full((SIZE, SIZE, 3), 0.1, np.float32)
    if square is not None:
        y, x = square
        img[y : y + 6, x : x + 6] = 0.9
    save_image(path, img)


def _mask(path: Path, square: tuple[int, int]) -> None:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    y, x = square
    mask[y : y + 6, x : x + 6] = 255
    save_image(path, mask)


def test_mvtec_ad2_public_test_split_is_evaluated(tmp_path: Path) -> None:
    for i in range(3):
        _part(tmp_path / "test_public/good" / f"{i:03d}.png")
    for i, square in enumerate([(4, 4), (20, 10)]):
        _part(tmp_path / "test_public/bad" / f"{i:03d}_regular.png", square)
        _mask(tmp_path / "test_public/ground_truth/bad" / f"{i:03d}_regular_mask.png", square)
    result = evaluate(BrightnessScorer(), tmp_path, progress=False)
    assert result["count"] == 5 and result["defective"] == 2
    assert set(result["per_defect"]) == {"bad"}, "ground_truth/ inside test_public is not a defect type"
    assert result["image_auroc"] == 1.0 and result["pixel_auroc"] == 1.0
    assert result["without_mask"] == []


def test_defect_without_mask_counts_for_image_metrics_only(tmp_path: Path) -> None:
    for i in range(3):
        _part(tmp_path / "test/good" / f"{i:03d}.png")
    _part(tmp_path / "test/scratch/000.png", (4, 4))
    _mask(tmp_path / "ground_truth/scratch/000_mask.png", (4, 4))
    _part(tmp_path / "test/scratch/001.png", (20, 20))  # no mask: its bright pixels are not known to be good
    result = evaluate(BrightnessScorer(), tmp_path, progress=False)
    assert result["defective"] == 2 and result["image_auroc"] == 1.0
    assert result["without_mask"] == [str(tmp_path / "test/scratch/001.png")]
    assert result["pixel_auroc"] == 1.0, "the unmasked defect's hot pixels must not count as false alarms"
