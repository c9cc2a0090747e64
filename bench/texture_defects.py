"""Test defects for the texture check, independent of the training generator.

`anomaly.synthetic.defects` paints the synthetic defects the segmentation head learns from. Testing
with the same generator flatters the head; and some of its kinds are no defect at all on a
stochastic texture (a patch of grass cut and pasted into grass is grass). This module paints
the defect kinds of MVTec AD's texture categories instead, written separately and never
used in training:

- hole: a dark irregular blob with a lighter rim (carpet/leather/wood "hole")
- contamination: a blob of a foreign photo's texture (carpet/grid "metal_contamination")
- thread: a thin curved line, brighter or darker than its surroundings ("thread")
- glue: a blob where the texture is smoothed away and the brightness shifted ("glue", "oil")
- cut: a straight dark gash a few pixels wide ("cut", "crack")
- color: a strongly tinted blob, colour images only ("color")

Every defect is sized 0.2-4% of the crop (threads and cuts by length) and changes the
pixels inside its mask by design, so a person can see it.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("hole", "contamination", "thread", "glue", "cut", "color")


def _blob(shape: tuple[int, int], rng: np.random.Generator, area: float) -> np.ndarray:
    """Irregular filled outline: a circle whose radius wobbles with a few random harmonics."""
    h, w = shape
    radius = np.sqrt(area * h * w / np.pi)
    cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
    theta = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    wobble = sum(rng.uniform(0, 0.25 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    stretch = rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, np.pi)
    r = radius * (1 + wobble)
    x, y = r * np.cos(theta), r * stretch * np.sin(theta)
    xs = cx + x * np.cos(angle) - y * np.sin(angle)
    ys = cy + x * np.sin(angle) + y * np.cos(angle)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.stack([xs, ys], 1).round().astype(np.int32)], 1)
    return mask.astype(bool)


def _soft(mask: np.ndarray) -> np.ndarray:
    """Alpha for blending, soft at the edge but 1 inside the mask."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    return np.maximum(alpha, mask)[..., None]


def _curve(shape: tuple[int, int], rng: np.random.Generator, length: float, bend: float) -> np.ndarray:
    """Points of a smooth random curve (a quadratic Bezier) of roughly the given length."""
    h, w = shape
    p0 = rng.uniform([0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h])
    direction = rng.uniform(0, 2 * np.pi)
    p2 = np.clip(p0 + length * np.array([np.cos(direction), np.sin(direction)]), 2, [w - 3, h - 3])
    normal = np.array([-np.sin(direction), np.cos(direction)])
    p1 = (p0 + p2) / 2 + normal * rng.uniform(-bend, bend) * length
    t = np.linspace(0, 1, 60)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    return pts.round().astype(np.int32)


def paint(img: np.ndarray, rng: np.random.Generator, kind: str, foreign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One defect of `kind` on an HxWx3 float image in [0, 1]; returns (image, mask).
    `foreign` is an HxWx3 float crop of another photo, for contamination."""
    h, w = img.shape[:2]
    out = img.copy()
    gray = img.mean(axis=2)
    level = float(np.median(gray))
    area = float(np.exp(rng.uniform(np.log(0.002), np.log(0.04))))
    if kind in ("thread", "cut"):
        mask = np.zeros((h, w), np.uint8)
        pts = _curve((h, w), rng, rng.uniform(0.2, 0.6) * min(h, w), 0.5 if kind == "thread" else 0.08)
        width = int(rng.integers(1, 3)) if kind == "thread" else int(rng.integers(2, 5))
        cv2.polylines(mask, [pts], False, 1, width)
        mask = mask.astype(bool)
        if kind == "thread":  # a fibre far from the local gray level, bright on dark and vice versa
            value = np.full(3, 0.95 if level < 0.5 else 0.05)
            out[mask] = value
        else:  # a gash: dark inside, a light lip on one side
            lip = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
            out[lip] = np.clip(out[lip] + 0.25, 0, 1)
            out[mask] = out[mask] * 0.15
            mask = mask | lip
        return out, mask
    mask = _blob((h, w), rng, area)
    alpha = _soft(mask)
    if kind == "hole":
        rim = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
        fill = np.full_like(img, 0.04)
        out = alpha * fill + (1 - alpha) * img
        out[rim] = np.clip(out[rim] * 0.6 + 0.35, 0, 1)
        mask = mask | rim
    elif kind == "contamination":
        out = alpha * foreign + (1 - alpha) * img
    elif kind == "glue":
        smooth = cv2.GaussianBlur(img, (0, 0), 6.0)
        shift = 0.3 if level < 0.5 else -0.3
        out = alpha * np.clip(smooth + shift, 0, 1) + (1 - alpha) * img
    elif kind == "color":
        tint = np.array([0.9, 0.2, 0.1]) if rng.random() < 0.5 else np.array([0.1, 0.7, 0.2])
        out = alpha * (0.4 * img + 0.6 * tint) + (1 - alpha) * img
    else:
        raise ValueError(f"unknown defect kind {kind!r}")
    return np.clip(out, 0, 1), mask
