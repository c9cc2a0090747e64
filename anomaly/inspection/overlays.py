"""Pictures people look at: heatmap overlays with defect outlines, and report panels.

No torch here; OpenCV draws everything. Colours: calm (below half the pixel
threshold) shows the part as it is; warmer colours mean higher scores on the
calibrated scale, where 1.0 is the image threshold.
"""

from __future__ import annotations

import cv2
import numpy as np

from anomaly.inspection.imageio import to_uint8

OUTLINE_RGB = (255, 40, 40)
HEAT_MAX = 1.5  # calibrated score drawn at the hot end of the colour map
_TURBO_RGB = (
    cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, :, ::-1].reshape(256, 1, 3).copy()
)


def colorize(heatmap: np.ndarray, vmax: float = HEAT_MAX) -> np.ndarray:
    """Calibrated heatmap -> RGB uint8 (turbo colour map, 0 .. vmax)."""
    # negative scores (calmer than the median normal pixel) are cold, not |x|
    levels = cv2.convertScaleAbs(np.maximum(heatmap, 0).astype(np.float32), alpha=255.0 / vmax)  # saturates
    return cv2.LUT(cv2.cvtColor(levels, cv2.COLOR_GRAY2RGB), _TURBO_RGB)  # = applyColorMap, faster


def overlay(
    image: np.ndarray, heatmap: np.ndarray, mask: np.ndarray | None = None, pixel_threshold: float = 0.5
) -> np.ndarray:
    """The part with its heatmap blended in where scores are elevated, and defect
    outlines drawn on top. image: internal form or uint8 RGB; returns uint8 RGB."""
    base = image if image.dtype == np.uint8 else to_uint8(image)
    out = np.array(base, copy=True, order="C")
    # Opacity ramps from 0 at half the pixel threshold to 0.6 at the image threshold.
    lo = 0.5 * pixel_threshold
    # Only the box around the warm pixels is coloured and blended; elsewhere the opacity
    # is 0 and the part shows as it is. Most parts on a line are good and calm almost
    # everywhere, and batch scoring draws an overlay per image on its throughput path.
    x, y, w, h = cv2.boundingRect((heatmap > lo).view(np.uint8))
    if w and h:
        warm = heatmap[y : y + h, x : x + w]
        alpha = np.clip((warm - lo) * (0.6 / max(1.0 - lo, 1e-6)), 0.0, 0.6).astype(np.float32)
        # one fused OpenCV pass instead of four float32 numpy passes
        out[y : y + h, x : x + w] = cv2.blendLinear(
            np.ascontiguousarray(base[y : y + h, x : x + w]), colorize(warm), 1.0 - alpha, alpha
        )
    if mask is not None and mask.any():
        thickness = max(1, round(max(image.shape[:2]) / 300))
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness)
    return out


def label(panel: np.ndarray, text: str) -> np.ndarray:
    """A panel with a caption bar on top."""
    bar = np.full((22, panel.shape[1], 3), 30, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([bar, panel])


def panel_row(panels: list[tuple[str, np.ndarray]], height: int = 256) -> np.ndarray:
    """Side-by-side captioned panels, each resized to the same height."""
    out = []
    for text, img in panels:
        img = img if img.dtype == np.uint8 else to_uint8(img)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        w = max(1, round(img.shape[1] * height / img.shape[0]))
        out.append(label(cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA), text))
    return np.hstack(out)
