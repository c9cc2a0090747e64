"""Pictures the dashboard shows: the clean part, its heatmap, or its defect outlines.

The dashboard draws its own views rather than the saved-overlay style of `anomaly score`
because an inspector needs to look through the heat at the defect: the opacity is
theirs to choose, the heat starts only at the pixel threshold (a calm good part shows
as it is, with no cold-colour speckle), its colours run from yellow to red only, and
outlines are a white line inside a black one, which stands out on any part and any heat.
Also the display size of pictures and the verdict colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from anomaly.inspection.imageio import ImageReadError

View = Literal["original", "heatmap", "outline"]
VIEWS: tuple[View, ...] = ("original", "heatmap", "outline")
VIEW_LABELS = {"original": "Original", "heatmap": "Heatmap", "outline": "Outline only"}
DEFAULT_OPACITY = 0.55
HEAT_LOW_RGB = np.array([255, 225, 40], np.float32)  # at the pixel threshold
HEAT_HIGH_RGB = np.array([215, 0, 0], np.float32)  # at 1.5 x the image threshold and above
OUTLINE_INNER = (255, 255, 255)
OUTLINE_OUTER = (0, 0, 0)
DISPLAY_MAX_SIDE = 1024  # pixels; larger images are shown downscaled (inspected at full size)

PASS_COLOR = "#1b7f3b"
FAIL_COLOR = "#c62828"
ERROR_COLOR = "#9a5b00"


def display_size(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(array: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    h, w = array.shape[:2]
    dw, dh = display_size(w, h, max_side)
    if (dw, dh) == (w, h):
        return array
    return cv2.resize(array, (dw, dh), interpolation=cv2.INTER_AREA)


def heat_colours(heatmap: np.ndarray, pixel_threshold: float, image_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float32 colours, weight 0..1) of the heat: weight 0 below the pixel threshold,
    1 from the image threshold up; colours from yellow to red on the way to 1.5x it."""
    lo, hi = float(pixel_threshold), max(float(image_threshold), float(pixel_threshold) + 1e-6)
    weight = np.clip((heatmap - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    t = np.clip((heatmap - lo) / (1.5 * hi - lo), 0.0, 1.0).astype(np.float32)[..., None]
    return HEAT_LOW_RGB * (1.0 - t) + HEAT_HIGH_RGB * t, weight


def outline_thickness(shape: Sequence[int]) -> int:
    return max(1, round(max(shape[:2]) / 400))


def draw_outlines(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Defect outlines on a copy of uint8 RGB `image`: black, then white inside it."""
    out = np.array(image, copy=True, order="C")
    if mask is None or not mask.any():
        return out
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    t = outline_thickness(image.shape)
    cv2.drawContours(out, contours, -1, OUTLINE_OUTER, 3 * t)
    cv2.drawContours(out, contours, -1, OUTLINE_INNER, t)
    return out


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """(x, y, w, h) boxes in `image`'s pixels, drawn like outlines (for runs without masks)."""
    out = np.array(image, copy=True, order="C")
    t = outline_thickness(image.shape)
    for x, y, w, h in boxes:
        cv2.rectangle(out, (x, y), (x + max(w, 1), y + max(h, 1)), OUTLINE_OUTER, 3 * t)
        cv2.rectangle(out, (x, y), (x + max(w, 1), y + max(h, 1)), OUTLINE_INNER, t)
    return out


def fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A bool mask resized to (h, w); shrinking keeps any pixel a defect touched, so a
    hairline defect is still outlined on a downscaled picture."""
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA) > 0


def fit_map(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if heatmap.shape == shape:
        return heatmap
    return cv2.resize(heatmap.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def compose(
    image: np.ndarray,
    heatmap: np.ndarray | None,
    mask: np.ndarray | None,
    pixel_threshold: float,
    image_threshold: float,
    view: View = "heatmap",
    opacity: float = DEFAULT_OPACITY,
) -> np.ndarray:
    """One view of a part at `image`'s resolution (uint8 RGB): the original; heat blended
    at `opacity` with outlines; or outlines only. Heatmap and mask are resized to fit."""
    shape = image.shape[:2]
    if view == "original":
        return image
    out = image
    if view == "heatmap" and heatmap is not None and opacity > 0:
        colours, weight = heat_colours(fit_map(heatmap, shape), pixel_threshold, image_threshold)
        a = (weight * float(opacity))[..., None]
        out = (image.astype(np.float32) * (1.0 - a) + colours * a).round().astype(np.uint8)
    return draw_outlines(out, fit_mask(mask, shape)) if mask is not None else np.array(out, copy=True)


def blend(base: np.ndarray, top: np.ndarray, opacity: float) -> np.ndarray:
    """`top` over `base` (same size after resizing top) at `opacity`: a saved overlay
    over the clean original, for runs whose heatmaps were not kept."""
    if top.shape != base.shape:
        top = cv2.resize(top, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_AREA)
    return cv2.addWeighted(top, float(opacity), base, 1.0 - float(opacity), 0.0)


def display_decode(data: bytes, name: str, max_side: int) -> tuple[np.ndarray, tuple[int, int], bool]:
    """(uint8 RGB no larger than max_side, original (w, h), has transparency) of an image
    file, without a float copy of the full image: a 10000 x 10000 photo would need 1.2 GB
    as the runtime's float form. Alpha is composited on black before shrinking, the
    runtime's rule (`imageio._to_internal`), so the picture is what the model sees."""
    buf = np.frombuffer(data, np.uint8)
    raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if raw is None:
        raise ImageReadError(f"{name}: not a readable image (corrupt or unsupported format)")
    if raw.dtype == np.uint16:
        raw = cv2.convertScaleAbs(raw, alpha=255.0 / 65535.0)
    elif raw.dtype != np.uint8:
        raw = cv2.convertScaleAbs(np.clip(raw.astype(np.float32), 0.0, 1.0), alpha=255.0)
    if raw.ndim == 2 or raw.shape[2] == 1:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    transparent = raw.shape[2] == 4 and bool((raw[:, :, 3] < 255).any())
    if raw.shape[2] == 4:
        alpha = raw[:, :, 3]
        raw = cv2.multiply(raw[:, :, :3], cv2.merge([alpha, alpha, alpha]), scale=1.0 / 255.0)
    h, w = raw.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        raw = cv2.resize(raw, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB), (w, h), transparent
