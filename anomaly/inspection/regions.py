"""From a calibrated heatmap to a defect mask and a list of defect regions.

Regions use hysteresis (as Canny edges do): a region is a connected area above the
pixel threshold that reaches the image threshold somewhere. So a passing part has no
regions, a failing part has at least one, and each region shows the defect's full
extent rather than only its peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int
    area: int  # pixels of the original image
    peak: float  # highest calibrated score inside the region

    def to_dict(self) -> dict:
        return asdict(self)


def defect_mask(heatmap: np.ndarray, image_threshold: float, pixel_threshold: float) -> np.ndarray:
    """Bool mask of defect pixels: above pixel_threshold and connected to a pixel at or
    above image_threshold (8-connectivity)."""
    return _hysteresis(heatmap, image_threshold, pixel_threshold)[0]


def _hysteresis(
    heatmap: np.ndarray, image_threshold: float, pixel_threshold: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(mask, component labels, component stats, kept label ids): the mask's connected
    regions are exactly the kept components, so regions need no second labelling."""
    strong = heatmap >= image_threshold
    if not strong.any():  # a passing part, the usual case on a line: nothing to label
        return np.zeros(heatmap.shape, dtype=bool), None, None, np.zeros(0, dtype=np.int64)
    low = heatmap >= pixel_threshold if pixel_threshold < image_threshold else strong
    n, labels, stats, _ = cv2.connectedComponentsWithStats(low.view(np.uint8), connectivity=8)
    kept = np.unique(labels[strong])
    if len(kept) == n - 1:  # every component reaches the image threshold
        return low, labels, stats, kept
    keep = np.zeros(n, dtype=bool)
    keep[kept] = True
    return keep[labels], labels, stats, kept  # a lookup, not np.isin's sort


def mask_and_regions(
    heatmap: np.ndarray, image_threshold: float, pixel_threshold: float
) -> tuple[np.ndarray, list[Region]]:
    """defect_mask and find_regions in one labelling pass (the batch scorer's hot path)."""
    mask, labels, stats, kept = _hysteresis(heatmap, image_threshold, pixel_threshold)
    return mask, ([] if labels is None or stats is None else _regions(heatmap, labels, stats, kept))


def _regions(heatmap: np.ndarray, labels: np.ndarray, stats: np.ndarray, ids: np.ndarray) -> list[Region]:
    """Regions of the given components; each peak is read inside its own bounding box,
    so many regions on a large image cost one pass over the image, not one each."""
    regions = []
    for i in ids:
        x, y, w, h, area = (int(v) for v in stats[i])
        peak = float(heatmap[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
        regions.append(Region(x, y, w, h, area, peak))
    return sorted(regions, key=lambda r: r.area, reverse=True)


def find_regions(heatmap: np.ndarray, mask: np.ndarray) -> list[Region]:
    """Connected regions of a mask, largest first, with bounding box, area and peak."""
    if not mask.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return _regions(heatmap, labels, stats, np.arange(1, n))
