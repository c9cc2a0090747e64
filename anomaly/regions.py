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
    low = heatmap >= min(pixel_threshold, image_threshold)
    if not low.any():
        return low
    n, labels = cv2.connectedComponents(low.astype(np.uint8), connectivity=8)
    strong = np.unique(labels[heatmap >= image_threshold])
    strong = strong[strong > 0]
    return np.isin(labels, strong)


def find_regions(heatmap: np.ndarray, mask: np.ndarray) -> list[Region]:
    """Connected regions of a mask, largest first, with bounding box, area and peak."""
    if not mask.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    regions = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        peak = float(heatmap[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
        regions.append(Region(x, y, w, h, area, peak))
    return sorted(regions, key=lambda r: r.area, reverse=True)
