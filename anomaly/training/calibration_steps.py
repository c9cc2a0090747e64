"""The `Detector`'s calibration steps, as functions of the detector: normalisation and
thresholds from held-out good images, out-of-fold good scores, the shipped threshold and
the F1-optimal thresholds from labelled or painted defects."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from anomaly.errors import ModelFileError
from anomaly.evaluation.metrics import f1_operating_threshold
from anomaly.evaluation.pixel_metrics import pixel_f1_threshold
from anomaly.inspection.layout import Layout, per_image
from anomaly.synthetic.defects import DefectSettings, random_defect
from anomaly.training.calibrate import Calibration, calibrate, decision_threshold, edge_profile
from anomaly.training.fit_common import to_tensor
from anomaly.training.model import separable_blur
from anomaly.training.networks import PatchMemory
from anomaly.training.screening import memory_owner

if TYPE_CHECKING:
    from anomaly.training.detector import Detector

OBVIOUS_DEFECTS = (0.05, 0.2)  # scale range of the painted defects a shipped threshold must catch
PAINTED_FOR_THRESHOLD = 40  # about this many painted held-out images (at least one per image)


@torch.no_grad()
def raw_maps(det: Detector, fitted: list[np.ndarray], batch_size: int = 8) -> np.ndarray:
    """The module's raw (uncalibrated) maps of model inputs."""
    det.module.eval()
    out = [
        det.module.raw_map(to_tensor(fitted[i : i + batch_size])).numpy()[:, 0]
        for i in range(0, len(fitted), batch_size)
    ]
    return np.concatenate(out)


@torch.no_grad()
def calibrate_on_good(det: Detector, good_images: list[np.ndarray], layouts: list[Layout]) -> Calibration:
    """Set the per-model normalisation and thresholds from held-out good images
    (their model inputs, every view in order, and each image's layout)."""
    m = det.module
    m.eval()
    if det.model_config.residual_kind == "l2+ssim":
        l2s, ssims = [], []
        for i in range(0, len(good_images), 8):
            l2, ssim = m.residual_components(to_tensor(good_images[i : i + 8]))
            l2s.append(float(l2.mean()) * l2.shape[0])
            ssims.append(float(ssim.mean()) * l2.shape[0])
        n = len(good_images)
        m.residual_scale.copy_(torch.tensor([max(sum(l2s) / n, 1e-12), max(sum(ssims) / n, 1e-12)]))
    if m.memory is not None:
        levels, maps = alarm_levels(det, good_images, layouts)
        m.residual_scale.copy_(torch.tensor(levels))
    else:
        maps = raw_maps(det, good_images)
    if det.model_config.edge_calibration:
        maps = calibrate_edges(det, maps, layouts)
    cal = calibration_of(det, maps, layouts)
    m.map_center.fill_(cal.map_center)
    m.map_scale.fill_(cal.map_scale)
    m.pixel_threshold.fill_(cal.pixel_threshold)
    m.calibrated.fill_(1.0)
    det.calibration = cal
    return cal


def calibrate_edges(det: Detector, maps: np.ndarray, layouts: list[Layout]) -> np.ndarray:
    """Fit the module's per-ring edge calibration on held-out raw maps (image pixels
    only, not letterbox padding) and return the maps with it applied."""
    m = det.module
    valid = (
        np.concatenate(
            [np.stack(layout.cut(np.ones((layout.original_h, layout.original_w), np.float32))) for layout in layouts]
        )
        > 0.5
    )
    rings = m.edge_ring.numpy()
    centre, scale = edge_profile(maps, valid, rings, band=det.model_config.image_size // 8)
    m.edge_center.copy_(torch.from_numpy(centre))
    m.edge_scale.copy_(torch.from_numpy(scale))
    return (maps - centre[rings]) / scale[rings]


def calibration_of(det: Detector, maps: np.ndarray, layouts: list[Layout]) -> Calibration:
    crops = [layout.content(views) for views, layout in zip(per_image(list(maps), layouts), layouts)]
    scores = np.array([c.max() for c in crops])
    pixels = np.concatenate([c.ravel() for c in crops])
    return calibrate(scores, pixels, det.train_config.target_false_reject)


@torch.no_grad()
def alarm_levels(det: Detector, good_images: list[np.ndarray], layouts: list[Layout]) -> tuple[list[float], np.ndarray]:
    """Feature autoencoder with a memory: each detector's own alarm level (its
    image threshold minus its median good pixel, on its smoothed map), so the two
    can be added in units of their thresholds; and the combined raw maps of the
    same images. Smoothing is linear, so the combined map is the sum of the smoothed
    parts over their levels, and the backbone runs once per image."""
    m = det.module
    parts: list[list[np.ndarray]] = [[], []]
    for i in range(0, len(good_images), 8):
        for k, part in enumerate(m.evidence_parts(to_tensor(good_images[i : i + 8]))):
            assert part is not None  # called only for a model with a memory
            parts[k].append(separable_blur(part, m.smooth_kernel).numpy()[:, 0])
    smoothed = [np.concatenate(p) for p in parts]
    levels = [max(calibration_of(det, s, layouts).map_scale, 1e-12) for s in smoothed]
    scale = np.asarray(levels, dtype=np.float32)  # the module divides by its float32 buffer
    return levels, smoothed[0] / scale[0] + smoothed[1] / scale[1]


def patch_memory(det: Detector) -> PatchMemory | None:
    """The detector's patch memory: beside the feature autoencoder, or the whole network
    of the patch_memory family; None for models without one."""
    memory = det.module.memory if det.module.memory is not None else det.module.net
    return memory if isinstance(memory, PatchMemory) else None


@torch.no_grad()
def out_of_fold_scores(
    det: Detector,
    fit_views: list[np.ndarray],
    layouts: list[Layout],
    sources: np.ndarray | None,
) -> np.ndarray:
    """Calibrated scores of training images, each scored against the patch memory
    without the patches it contributed: a leave-one-image-out estimate of how new
    good parts score, so a small set gives many good scores, not only the held-out
    few. The autoencoder part stays in-sample (it is early-stopped on the held-out
    loss and reconstructs held-out parts about as well). Empty without a memory.
    Every image, in order."""
    memory = patch_memory(det)
    if sources is None or memory is None:
        return np.zeros(0)
    starts = np.cumsum([0] + [layout.views for layout in layouts])
    owner = memory_owner(layouts, sources)
    saved = memory.memory.clone(), memory.memory_sqnorm.clone()
    scores = []
    try:
        for i in range(len(layouts)):
            own = torch.from_numpy(owner == i)
            # rows of image i can never be a nearest patch: far away on the search keys and in full
            memory.memory[own] = 1e3
            memory.memory_sqnorm[own] = 1e30
            out, _ = det.module(to_tensor(fit_views[starts[i] : starts[i + 1]]))
            scores.append(float(layouts[i].content(list(out.numpy()[:, 0])).max()))
            memory.memory.copy_(saved[0])
            memory.memory_sqnorm.copy_(saved[1])
    finally:
        memory.memory.copy_(saved[0])
        memory.memory_sqnorm.copy_(saved[1])
    return np.array(scores)


@torch.no_grad()
def set_decision_threshold(det: Detector, good_scores: np.ndarray, good_images: list[np.ndarray]) -> Calibration:
    """Move the shipped image threshold (see calibrate.decision_threshold) and rescale
    the model so that it stays at 1.0 on the calibrated scale."""
    assert det.calibration is not None
    rng = np.random.default_rng(det.train_config.seed + 1)
    copies = max(1, PAINTED_FOR_THRESHOLD // max(len(good_images), 1))
    painted = [random_defect(img, rng, scale_range=OBVIOUS_DEFECTS)[0] for img in good_images for _ in range(copies)]
    threshold, how, levels = decision_threshold(
        good_scores, det.score(painted)[1], det.train_config.target_false_reject
    )
    cal, m = det.calibration, det.module
    cal.map_scale *= threshold
    m.map_scale.fill_(cal.map_scale)
    cal.pixel_threshold = float(np.clip(cal.pixel_threshold / threshold, 0.05, 1.0))
    m.pixel_threshold.fill_(cal.pixel_threshold)
    cal.good_count, cal.threshold_from = len(good_scores), how
    cal.threshold_factor = float(threshold)
    cal.threshold_levels = {k: round(v / threshold, 4) for k, v in levels.items()}
    return cal


def calibrate_with_synthetic(
    det: Detector, good_images: list[np.ndarray], settings: DefectSettings | None = None
) -> Calibration:
    """F1-optimal thresholds with no labelled defects: paint one synthetic defect
    (exact mask) on a copy of each held-out good image and pick the thresholds that
    best separate them from the untouched originals. Stored next to the calibrated
    thresholds, with the generator's settings."""
    settings = settings or DefectSettings(scale_range=(0.01, 0.1), probability=1.0)
    rng = np.random.default_rng(det.train_config.seed)
    painted = [
        random_defect(img, rng, kinds=settings.kinds, scale_range=settings.scale_range)[:2] for img in good_images
    ]
    images = list(good_images) + [p[0] for p in painted]
    labels = [False] * len(good_images) + [True] * len(painted)
    masks = [np.zeros(img.shape[:2], bool) for img in good_images] + [p[1] for p in painted]
    cal = det.calibrate_with_defects(images, labels, masks)
    cal.f1_source, cal.synthetic_defects = "synthetic", settings.to_dict()
    return cal


def calibrate_with_defects(
    det: Detector, images: list[np.ndarray], labels: list[bool], masks: list[np.ndarray | None]
) -> Calibration:
    """F1-optimal image and pixel thresholds from labelled images (good and defective),
    offered next to the false-reject ones; they do not replace them. Defects without
    a mask (None) count for the image threshold only."""
    if det.calibration is None:
        raise ModelFileError("calibrate on good images first")
    maps, scores = det.score(images)
    det.calibration.image_threshold_f1 = float(f1_operating_threshold(np.array(labels), scores)[0])
    defect_maps = [mp for mp, lab, mk in zip(maps, labels, masks) if lab and mk is not None]
    defect_masks = [mk for mk, lab in zip(masks, labels) if lab and mk is not None]
    if defect_maps:
        det.calibration.pixel_threshold_f1 = float(pixel_f1_threshold(defect_masks, defect_maps)[0])
    det.calibration.f1_source, det.calibration.synthetic_defects = "labelled", None
    return det.calibration
