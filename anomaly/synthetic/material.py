"""Painters that replace material: missing material, a foreign texture, a pasted patch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from anomaly.synthetic.canvas import (
    Defect,
    Window,
    as_image,
    as_region,
    blob_alpha,
    commit,
    extent,
    local_grid,
    perlin_noise,
    pick_center,
    retry,
    window,
)


def _background_fill(
    image: np.ndarray,
    rng: np.random.Generator,
    win: Window,
    background: np.ndarray | Sequence[float] | None,
    region: np.ndarray | None,
    cy: float,
    cx: float,
    radius: float,
) -> np.ndarray:
    """What shows where material is gone: the given background image or colour, or a sampled one.

    Sampled: the median colour of non-part pixels near the defect when a
    region (part mask) is known, else of the image border, with noise of the
    same spread so the hole does not look painted flat.
    """
    shape = (win[0].stop - win[0].start, win[1].stop - win[1].start, 3)
    if background is not None:
        bg = np.asarray(background, np.float32)
        if bg.shape == image.shape:
            return bg[win]
        if bg.shape == (3,):
            return np.broadcast_to(bg, shape).astype(np.float32)
        raise ValueError(f"background must be a colour (3,) or an image {image.shape}, got {bg.shape}")
    samples = None
    if region is not None and not region.all():
        near = window(image.shape, cy, cx, radius * 3.0 + 8)
        local = image[near][~region[near]]
        samples = local if len(local) >= 8 else image[~region]
    if samples is None:
        samples = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    median = np.median(samples, axis=0)
    spread = np.median(np.abs(samples - median), axis=0) * 1.4826
    noise = rng.standard_normal(shape).astype(np.float32) * spread.astype(np.float32)
    return (median.astype(np.float32) + noise).astype(np.float32)


def missing_material(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    background: np.ndarray | Sequence[float] | None = None,
) -> Defect:
    """A chunk of the part broken off: an irregular area replaced by background.

    `background` is a colour (3,), a full background image (H, W, 3) (best:
    a renderer knows what lies behind the part), or None to sample it from
    the image (see `_background_fill`). With `region` (the part's mask) only
    part pixels are replaced, so a chunk centred on an edge becomes a bite
    out of the rim; the fracture edge left on the part is slightly darkened.
    """
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        radius = extent(img, s, 3.0) / 2.0
        win = window(img.shape, cy, cx, radius * 1.5 + 3)
        dy, dx = local_grid(win, cy, cx)
        alpha = blob_alpha(rng, dy, dx, radius, roughness=0.3, softness=1.0)
        rim = np.clip(cv2.dilate(alpha, np.ones((3, 3), np.uint8)) - alpha, 0.0, 1.0)
        old = img[win]
        bg = _background_fill(img, rng, win, background, reg, cy, cx, radius)
        patch = old * (1.0 - 0.3 * rim)[:, :, None]
        a = alpha[:, :, None]
        patch = patch * (1.0 - a) + bg * a
        return commit(img, win, patch, reg)

    return retry(img, rng, scale, reg, draw)


def _procedural_texture(shape: tuple[int, int], rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A foreign-looking texture (stripes, mottled colour, speckle or grid) for a patch.

    Colours are drawn far from `base` (the patch's mean colour) so the result
    reads as contamination, not as the part.
    """
    h, w = shape
    c1 = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    if np.abs(c1 - base).max() < 0.3:
        c1 = (1.0 - base).astype(np.float32)
    c2 = np.clip(c1 + rng.uniform(-0.4, 0.4, 3), 0.0, 1.0).astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:  # stripes
        ang, period = rng.uniform(0, np.pi), rng.uniform(3.0, 10.0)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = 0.5 + 0.5 * np.sin((xs * math.cos(ang) + ys * math.sin(ang)) * (2 * np.pi / period))
    elif kind == 1:  # mottled
        t = 0.5 + 0.5 * perlin_noise((h, w), rng, res=(3, 3), octaves=3)
    elif kind == 2:  # speckle
        t = (rng.random((h, w)) < 0.3).astype(np.float32)
        t = cv2.GaussianBlur(t, (0, 0), 0.6)
    else:  # grid
        period = int(rng.integers(4, 10))
        ys, xs = np.mgrid[0:h, 0:w]
        t = (((ys % period) < 2) | ((xs % period) < 2)).astype(np.float32)
    t = t[:, :, None]
    return (c1 * (1.0 - t) + c2 * t).astype(np.float32)


def _texture_crop(texture: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop (resized up if needed, randomly flipped) of a caller's texture image."""
    tex = np.asarray(texture)
    tex = tex.astype(np.float32) / 255.0 if tex.dtype == np.uint8 else tex.astype(np.float32)
    if tex.ndim == 2:
        tex = np.repeat(tex[:, :, None], 3, axis=2)
    h, w = shape
    if tex.shape[0] < h or tex.shape[1] < w:
        f = max(h / tex.shape[0], w / tex.shape[1])
        tex = cv2.resize(tex, (int(math.ceil(tex.shape[1] * f)), int(math.ceil(tex.shape[0] * f))))
    y0 = int(rng.integers(0, tex.shape[0] - h + 1))
    x0 = int(rng.integers(0, tex.shape[1] - w + 1))
    crop = tex[y0 : y0 + h, x0 : x0 + w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    return np.ascontiguousarray(crop[:, :, :3])


def perlin_foreign_texture(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    texture: np.ndarray | None = None,
    opacity: tuple[float, float] = (0.6, 1.0),
) -> Defect:
    """A Perlin-noise-shaped area filled with a foreign texture (DRAEM-style anomaly).

    The shape is thresholded Perlin noise pulled towards the centre so it
    forms one irregular island of about `scale` x the shorter side. The fill
    is a random crop of `texture` (any RGB image, float or uint8) or, if None,
    a procedural texture in a contrasting colour; blended with a random
    opacity from `opacity` and a one-pixel soft edge.
    """
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        half = extent(img, s, 4.0) / 2.0
        win = window(img.shape, cy, cx, half + 1)
        dy, dx = local_grid(win, cy, cx)
        shape = (win[0].stop - win[0].start, win[1].stop - win[1].start)
        cells = int(np.clip(round(max(shape) / 12.0), 2, 6))
        noise = perlin_noise(shape, rng, res=(cells, cells), octaves=2)
        falloff = 1.0 - np.clip(np.sqrt(dy * dy + dx * dx) / max(half, 1.0), 0.0, 1.0)
        field = 0.6 * noise + falloff - 0.5
        inside = (field > rng.uniform(-0.1, 0.15)).astype(np.float32)
        alpha = cv2.GaussianBlur(inside, (0, 0), 0.6) if min(shape) > 2 else inside
        old = img[win]
        if texture is not None:
            fill = _texture_crop(texture, shape, rng)
        else:
            fill = _procedural_texture(shape, rng, old.reshape(-1, 3).mean(axis=0))
        a = (alpha * rng.uniform(*opacity))[:, :, None]
        patch = old * (1.0 - a) + fill * a
        return commit(img, win, patch, reg)

    return retry(img, rng, scale, reg, draw)


def cut_paste(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
) -> Defect:
    """A patch of the image itself, maybe rotated and flipped, pasted elsewhere with a soft edge.

    The hardest kind of synthetic defect (CutPaste): colours and texture are
    the part's own, only the local structure is wrong. The mask is where the
    paste actually differs, so pasting onto look-alike texture marks little.
    """
    img = as_image(image)
    reg = as_region(region, img)
    h, w = img.shape[:2]

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        size = extent(img, s, 3.0)
        half = size / 2.0
        win = window(img.shape, cy, cx, half + 1)
        sy, sx = pick_center(rng, img, reg)
        sy, sx = float(np.clip(sy, half, h - half)), float(np.clip(sx, half, w - half))
        ang = rng.uniform(-np.pi, np.pi) if rng.random() < 0.7 else 0.0
        flip = -1.0 if rng.random() < 0.5 else 1.0
        c, sn = math.cos(ang), math.sin(ang)
        # destination pixel (x, y) -> source (x', y'): rotate/flip about the two centres
        lin = np.array([[c * flip, -sn], [sn * flip, c]])
        ox, oy = win[1].start + 0.5 - cx, win[0].start + 0.5 - cy
        offset = lin @ np.array([ox, oy]) + np.array([sx - 0.5, sy - 0.5])
        matrix = np.hstack([lin, offset[:, None]]).astype(np.float64)
        shape = (win[0].stop - win[0].start, win[1].stop - win[1].start)
        pasted = cv2.warpAffine(
            img,
            matrix,
            (shape[1], shape[0]),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        dy, dx = local_grid(win, cy, cx)
        if rng.random() < 0.5:
            inside = np.minimum(half - np.abs(dy), half - np.abs(dx))
        else:
            inside = half - np.sqrt(dy * dy + dx * dx)
        alpha = np.clip(inside / 1.5 + 0.5, 0.0, 1.0)[:, :, None]
        patch = img[win] * (1.0 - alpha) + pasted * alpha
        return commit(img, win, patch, reg)

    return retry(img, rng, scale, reg, draw)
