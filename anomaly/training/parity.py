"""Torch vs onnxruntime parity: the exported file must say what the trained module says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from anomaly.inspection.imageio import list_images, read_image
from anomaly.inspection.inspector import Inspector
from anomaly.inspection.layout import to_batch
from anomaly.training.detector import Detector


def parity_images(det: Detector, count: int = 4) -> list[np.ndarray]:
    """A few of the training images when they are still there, else seeded noise."""
    data = det.summary.get("data")
    paths = []
    if data and Path(data).is_dir():
        root = Path(data) / "train" / "good"
        paths = list_images(root if root.is_dir() else Path(data))[:count]
    if paths:
        return [read_image(p) for p in paths]
    rng = np.random.default_rng(0)
    return [
        rng.random((det.model_config.image_size, det.model_config.image_size, 3), dtype=np.float32)
        for _ in range(count)
    ]


def check_parity(det: Detector, onnx_path: str | Path, images: list[np.ndarray] | None = None) -> tuple[float, bool]:
    """(max abs difference of calibrated maps, identical verdicts) on the same inputs."""
    images = images if images is not None else parity_images(det)
    batch, _ = to_batch(images, *det.model_config.grid)
    with torch.no_grad():
        t_maps, t_scores = det.module.eval()(torch.from_numpy(batch))
    inspector = Inspector(onnx_path)
    o_maps, o_scores = inspector.run(batch)
    diff = float(np.abs(t_maps.numpy()[:, 0] - o_maps).max())
    thr = inspector.image_threshold
    same = bool(np.array_equal(t_scores.numpy() >= thr, o_scores >= thr))
    return diff, same
