"""The canvas every painter works on: noise, windows around a defect, and the rule
that keeps only visible changes (so a mask is exact). See `anomaly.synthetic.defects`."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

VISIBLE_DELTA = 4.0 / 255.0
"""Smallest per-channel change that counts as a defect pixel (about 4 grey levels)."""

Defect = tuple[np.ndarray, np.ndarray]
Window = tuple[slice, slice]

MAX_ATTEMPTS = 6

# --------------------------------------------------------------------------- noise


def perlin_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    res: tuple[int, int] = (4, 4),
    octaves: int = 1,
    persistence: float = 0.5,
) -> np.ndarray:
    """Fractal Perlin (gradient) noise, float32 (H, W) roughly in [-1, 1].

    `res` is the number of lattice cells of the first octave along (y, x);
    each further octave doubles it and weighs `persistence` times less.
    Fully vectorised: one gather per lattice corner, no Python pixel loops.
    """
    h, w = shape
    total = np.zeros((h, w), np.float64)
    amplitude, norm = 1.0, 0.0
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    for _ in range(max(1, octaves)):
        total += amplitude * _perlin_octave(h, w, ry, rx, rng)
        norm += amplitude
        amplitude *= persistence
        ry, rx = ry * 2, rx * 2
    return np.clip(total / norm, -1.0, 1.0).astype(np.float32)


def _perlin_octave(h: int, w: int, ry: int, rx: int, rng: np.random.Generator) -> np.ndarray:
    """One octave of gradient noise on a (ry x rx)-cell lattice, scaled to about [-1, 1]."""
    angles = rng.uniform(0.0, 2.0 * np.pi, (ry + 1, rx + 1))
    gx, gy = np.cos(angles), np.sin(angles)
    ys = (np.arange(h) + 0.5) * (ry / h)
    xs = (np.arange(w) + 0.5) * (rx / w)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    yy, xx = y0[:, None], x0[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        return gx[yy + dy, xx + dx] * (fx - dx) + gy[yy + dy, xx + dx] * (fy - dy)

    u = fx * fx * fx * (fx * (fx * 6.0 - 15.0) + 10.0)
    v = fy * fy * fy * (fy * (fy * 6.0 - 15.0) + 10.0)
    top = corner(0, 0) + u * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + u * (corner(1, 1) - corner(1, 0))
    return (top + v * (bottom - top)) * math.sqrt(2.0)


def smooth_noise(shape: tuple[int, int], rng: np.random.Generator, cells: float = 4.0) -> np.ndarray:
    """Cheap smooth value noise, float32 (H, W) with unit standard deviation.

    A coarse random grid upsampled bicubically; `cells` is roughly how many
    bumps fit along the longer side. Used to make shapes and strengths
    irregular where true Perlin noise is not needed.
    """
    h, w = shape
    step = max(h, w) / max(cells, 1.0)
    gh, gw = max(2, int(math.ceil(h / step)) + 2), max(2, int(math.ceil(w / step)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    std = float(field.std())
    return field / std if std > 1e-6 else field


# --------------------------------------------------------------------------- shared helpers


def as_image(image: np.ndarray) -> np.ndarray:
    """Validate and return the image as float32 (H, W, 3)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    return img


def as_region(region: np.ndarray | None, image: np.ndarray) -> np.ndarray | None:
    """Validate an optional allowed-area mask; an empty one is an error, not a silent no-op."""
    if region is None:
        return None
    reg = np.asarray(region, dtype=bool)
    if reg.shape != image.shape[:2]:
        raise ValueError(f"region/foreground shape {reg.shape} does not match image {image.shape[:2]}")
    if not reg.any():
        raise ValueError("region/foreground mask is empty: nowhere to put a defect")
    return reg


def extent(image: np.ndarray, scale: float, minimum: float) -> float:
    """Defect size in pixels: `scale` times the shorter side, at least `minimum`."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return max(float(minimum), float(scale) * min(image.shape[:2]))


def pick_center(rng: np.random.Generator, image: np.ndarray, region: np.ndarray | None) -> tuple[float, float]:
    """A random (y, x) position, inside `region` when one is given."""
    h, w = image.shape[:2]
    if region is None:
        return float(rng.uniform(0, h)), float(rng.uniform(0, w))
    flat = np.flatnonzero(region)
    k = int(flat[rng.integers(flat.size)])
    return k // w + float(rng.uniform(0.0, 1.0)), k % w + float(rng.uniform(0.0, 1.0))


def window(shape: tuple[int, ...], cy: float, cx: float, radius: float) -> Window:
    """Slices of a square window of `radius` around (cy, cx), clipped to the image."""
    h, w = shape[:2]
    r = max(1.0, radius)
    y0, y1 = max(0, int(math.floor(cy - r))), min(h, int(math.ceil(cy + r)) + 1)
    x0, x1 = max(0, int(math.floor(cx - r))), min(w, int(math.ceil(cx + r)) + 1)
    y0, x0 = min(y0, h - 1), min(x0, w - 1)
    return slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1))


def window_of_points(shape: tuple[int, ...], pts: np.ndarray, pad: float) -> Window:
    """The window around a set of (x, y) points, padded, clipped to the image."""
    h, w = shape[:2]
    x0 = max(0, int(math.floor(pts[:, 0].min() - pad)))
    x1 = min(w, int(math.ceil(pts[:, 0].max() + pad)) + 1)
    y0 = max(0, int(math.floor(pts[:, 1].min() - pad)))
    y1 = min(h, int(math.ceil(pts[:, 1].max() + pad)) + 1)
    x0, y0 = min(x0, w - 1), min(y0, h - 1)
    return slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1))


def local_grid(win: Window, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (dy, dx) of a window relative to (cy, cx), broadcastable."""
    ys = np.arange(win[0].start, win[0].stop, dtype=np.float32) + 0.5 - cy
    xs = np.arange(win[1].start, win[1].stop, dtype=np.float32) + 0.5 - cx
    return ys[:, None], xs[None, :]


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_gray(image: np.ndarray) -> bool:
    """True for an RGB image whose three channels are identical (a grayscale camera)."""
    return (
        image.ndim == 3
        and image.shape[2] == 3
        and bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))
    )


def commit(image: np.ndarray, win: Window, patch: np.ndarray, region: np.ndarray | None) -> Defect:
    """Write a repainted window back, keeping only visible changes, and build the exact mask.

    On a grayscale image the patch is turned gray first (as a gray camera would see
    it): a model that learnt colour cues from synthetic defects would look for colour
    that real defects on gray parts never have, and a hue-only change is no defect there.
    """
    old = image[win]
    new = np.clip(patch, 0.0, 1.0).astype(np.float32)
    if is_gray(image):
        new = np.repeat((new @ LUMA)[..., None], 3, axis=2)
    changed = np.abs(new - old).max(axis=2) >= VISIBLE_DELTA
    if region is not None:
        changed &= region[win]
    out = image.copy()
    out_win = out[win]
    out_win[changed] = new[changed]
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[win] = changed
    return out, mask


def force_visible(image: np.ndarray, rng: np.random.Generator, region: np.ndarray | None) -> Defect:
    """Last resort when every draw was invisible: a small contrasting dot (always visible)."""
    cy, cx = pick_center(rng, image, region)
    win = window(image.shape, cy, cx, 1.0)
    old = image[win]
    bright = old.mean(axis=2, keepdims=True) > 0.5
    patch = np.where(bright, old * 0.4, old + (1.0 - old) * 0.6)
    return commit(image, win, patch, region)


def retry(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float,
    region: np.ndarray | None,
    draw: Callable[[float], Defect],
) -> Defect:
    """Call `draw(scale)` until its mask is non-empty, enlarging a little each time."""
    for _ in range(MAX_ATTEMPTS):
        out, mask = draw(scale)
        if mask.any():
            return out, mask
        scale = min(scale * 1.6, 0.5)
    return force_visible(image, rng, region)


def draw_polyline(win: Window, pts: np.ndarray, thickness: int) -> np.ndarray:
    """Anti-aliased polyline coverage in [0, 1] over a window; pts are image (x, y)."""
    h, w = win[0].stop - win[0].start, win[1].stop - win[1].start
    canvas = np.zeros((h, w), np.uint8)
    local = pts - np.array([win[1].start, win[0].start], np.float64)
    fixed = np.round(local * 16.0).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [fixed], False, 255, thickness=max(1, int(thickness)), lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def wobbly_path(
    rng: np.random.Generator, cy: float, cx: float, length: float, jag: float, bend: float, step: float
) -> np.ndarray:
    """A path of (x, y) points of about `length`, centred on (cy, cx).

    `bend` is the total smooth turn (radians), `jag` the random per-segment
    angle jitter: small for scratches (smooth arcs), large for cracks.
    """
    n = max(2, int(math.ceil(length / step)))
    base = rng.uniform(0.0, 2.0 * np.pi)
    turn = np.linspace(-0.5, 0.5, n) * bend * rng.uniform(-1.0, 1.0)
    angles = base + turn + rng.normal(0.0, jag, n)
    seg = length / n
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * seg
    pts = np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)])
    pts -= pts.mean(axis=0)
    return pts + np.array([cx, cy])


def blob_alpha(
    rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float, roughness: float, softness: float
) -> np.ndarray:
    """Coverage of an irregular ellipse: 1 inside, falling to 0 over `softness` pixels at the edge."""
    ang = rng.uniform(0.0, np.pi)
    ratio = rng.uniform(0.55, 1.0)
    c, s = math.cos(ang), math.sin(ang)
    u = dx * c + dy * s
    v = (-dx * s + dy * c) / ratio
    dist = np.sqrt(u * u + v * v)
    shape = np.broadcast_shapes(dy.shape, dx.shape)
    wobble = smooth_noise(shape, rng, cells=4.0) * roughness * radius
    edge = radius + wobble - dist
    return np.clip(edge / max(softness, 1e-3) + 0.5, 0.0, 1.0).astype(np.float32)


def light(rng: np.random.Generator, light_angle: float | None) -> tuple[float, float]:
    """Unit (x, y) vector pointing towards the light."""
    ang = rng.uniform(0.0, 2.0 * np.pi) if light_angle is None else float(light_angle)
    return math.cos(ang), math.sin(ang)
