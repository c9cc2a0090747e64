"""Training-time augmentation: parts on a line are never placed or lit exactly alike.

Works on images already fitted to the working size (float32 (S, S, 3) in [0, 1]), with
OpenCV, so the training loop stays a plain loop over numpy batches.
"""

from __future__ import annotations

import cv2
import numpy as np

from anomaly.config import AugmentConfig


def augment(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    return augment_pair(image, None, cfg, rng)[0]


def augment_pair(
    image: np.ndarray, mask: np.ndarray | None, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment an image and move its defect mask (float (S, S), 0..1) with it: flips,
    rotation and shift apply to both, brightness and contrast to the image only."""
    out, m = image, mask
    if cfg.hflip and rng.random() < 0.5:
        out, m = out[:, ::-1], (None if m is None else m[:, ::-1])
    if cfg.vflip and rng.random() < 0.5:
        out, m = out[::-1], (None if m is None else m[::-1])
    if cfg.rotate_degrees > 0 or cfg.shift_fraction > 0:
        h, w = out.shape[:2]
        angle = rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees)
        shift = rng.uniform(-cfg.shift_fraction, cfg.shift_fraction, size=2) * (w, h)
        t = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
        t[:, 2] = t[:, 2] + shift
        out = cv2.warpAffine(
            np.ascontiguousarray(out), t, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        if m is not None:  # nothing outside the original frame is a defect
            m = cv2.warpAffine(
                np.ascontiguousarray(m, dtype=np.float32),
                t,
                (w, h),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
    if cfg.brightness > 0 or cfg.contrast > 0:
        gain = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        bias = rng.uniform(-cfg.brightness, cfg.brightness)
        mean = float(out.mean())
        out = (out - mean) * gain + mean + bias
    return np.clip(out, 0.0, 1.0).astype(np.float32), (None if m is None else np.ascontiguousarray(m, dtype=np.float32))
