"""Overlays: the part as it is where calm, the heatmap blended in where warm."""

import cv2
import numpy as np

from anomaly.inspection.imageio import to_uint8
from anomaly.inspection.overlays import colorize, overlay


def _blend_everywhere(image: np.ndarray, heatmap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """The overlay's definition, computed on the whole frame."""
    lo = 0.5 * pixel_threshold
    alpha = np.clip((heatmap - lo) * (0.6 / (1.0 - lo)), 0.0, 0.6).astype(np.float32)
    return cv2.blendLinear(to_uint8(image), colorize(heatmap), 1.0 - alpha, alpha)


def test_overlay_blends_only_where_warm_and_matches_the_whole_frame_blend() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((90, 130, 3)).astype(np.float32)
    calm = np.full((90, 130), -0.1, np.float32)
    assert np.array_equal(overlay(image, calm, None, 0.6), to_uint8(image))  # a calm part shows as it is
    spot = calm.copy()
    spot[40:50, 70:85] = 1.4
    drawn = overlay(image, spot, None, 0.6)
    assert np.array_equal(drawn, _blend_everywhere(image, spot, 0.6))
    changed = np.argwhere((drawn != to_uint8(image)).any(axis=2))
    assert changed.min(axis=0).tolist() == [40, 70] and changed.max(axis=0).tolist() == [49, 84]
    noisy = (rng.random((90, 130)) * 1.5).astype(np.float32)
    assert np.array_equal(overlay(image, noisy, None, 0.6), _blend_everywhere(image, noisy, 0.6))


def test_overlay_outlines_the_mask_and_leaves_the_input_alone() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[20:30, 20:30] = 2.0
    drawn = overlay(image, heatmap, heatmap > 1.0, 0.6)
    assert not image.any()  # drawn on a copy
    assert (drawn[20, 20:30] == (255, 40, 40)).all()  # the outline colour on the region's border
