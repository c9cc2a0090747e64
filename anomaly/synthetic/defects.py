"""Synthetic defects painted onto good images.

Used for the demo dataset (`anomaly.synthetic.demo`) and for training models that learn
from synthetic defects. Every painter takes an internal-form image (float32
(H, W, 3) RGB in [0, 1]) and a `numpy.random.Generator` and returns
`(defective_image, mask)`.

The mask is exact by construction: a painter first computes what the pixels of
a small window would become, then keeps only the pixels whose change is visible
(at least `VISIBLE_DELTA` in some channel) and restores all others bit for bit.
So the mask is True exactly where the returned image differs from the input,
which is what a pixel-level metric needs: a training target that marks a pixel
the model could not possibly see as changed only teaches it noise.

`scale` is the defect's characteristic size (length of a line, diameter of a
blob) as a fraction of the image's shorter side, e.g. 0.005 (a few pixels) to
0.3 (large). A draw that turns out invisible (say, a dark crack on a black
area) is retried somewhere else and a little larger, so the mask is never
empty.

numpy and OpenCV only (no torch): the same code runs in data loaders, tools
and tests. Work is done in a window around the defect, so the cost does not
grow with the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

VISIBLE_DELTA = 4.0 / 255.0
"""Smallest per-channel change that counts as a defect pixel (about 4 grey levels)."""

Defect = tuple[np.ndarray, np.ndarray]
Window = tuple[slice, slice]

_MAX_ATTEMPTS = 6

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


def _as_image(image: np.ndarray) -> np.ndarray:
    """Validate and return the image as float32 (H, W, 3)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    return img


def _as_region(region: np.ndarray | None, image: np.ndarray) -> np.ndarray | None:
    """Validate an optional allowed-area mask; an empty one is an error, not a silent no-op."""
    if region is None:
        return None
    reg = np.asarray(region, dtype=bool)
    if reg.shape != image.shape[:2]:
        raise ValueError(f"region/foreground shape {reg.shape} does not match image {image.shape[:2]}")
    if not reg.any():
        raise ValueError("region/foreground mask is empty: nowhere to put a defect")
    return reg


def _extent(image: np.ndarray, scale: float, minimum: float) -> float:
    """Defect size in pixels: `scale` times the shorter side, at least `minimum`."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return max(float(minimum), float(scale) * min(image.shape[:2]))


def _pick_center(rng: np.random.Generator, image: np.ndarray, region: np.ndarray | None) -> tuple[float, float]:
    """A random (y, x) position, inside `region` when one is given."""
    h, w = image.shape[:2]
    if region is None:
        return float(rng.uniform(0, h)), float(rng.uniform(0, w))
    flat = np.flatnonzero(region)
    k = int(flat[rng.integers(flat.size)])
    return k // w + float(rng.uniform(0.0, 1.0)), k % w + float(rng.uniform(0.0, 1.0))


def _window(shape: tuple[int, ...], cy: float, cx: float, radius: float) -> Window:
    """Slices of a square window of `radius` around (cy, cx), clipped to the image."""
    h, w = shape[:2]
    r = max(1.0, radius)
    y0, y1 = max(0, int(math.floor(cy - r))), min(h, int(math.ceil(cy + r)) + 1)
    x0, x1 = max(0, int(math.floor(cx - r))), min(w, int(math.ceil(cx + r)) + 1)
    y0, x0 = min(y0, h - 1), min(x0, w - 1)
    return slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1))


def _window_of_points(shape: tuple[int, ...], pts: np.ndarray, pad: float) -> Window:
    """The window around a set of (x, y) points, padded, clipped to the image."""
    h, w = shape[:2]
    x0 = max(0, int(math.floor(pts[:, 0].min() - pad)))
    x1 = min(w, int(math.ceil(pts[:, 0].max() + pad)) + 1)
    y0 = max(0, int(math.floor(pts[:, 1].min() - pad)))
    y1 = min(h, int(math.ceil(pts[:, 1].max() + pad)) + 1)
    x0, y0 = min(x0, w - 1), min(y0, h - 1)
    return slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1))


def _local_grid(win: Window, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (dy, dx) of a window relative to (cy, cx), broadcastable."""
    ys = np.arange(win[0].start, win[0].stop, dtype=np.float32) + 0.5 - cy
    xs = np.arange(win[1].start, win[1].stop, dtype=np.float32) + 0.5 - cx
    return ys[:, None], xs[None, :]


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_gray(image: np.ndarray) -> bool:
    """True for an RGB image whose three channels are identical (a grayscale camera)."""
    return image.ndim == 3 and image.shape[2] == 3 and bool(
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _commit(image: np.ndarray, win: Window, patch: np.ndarray, region: np.ndarray | None) -> Defect:
    """Write a repainted window back, keeping only visible changes, and build the exact mask.

    On a grayscale image the patch is turned gray first (as a gray camera would see
    it): a model that learnt colour cues from synthetic defects would look for colour
    that real defects on gray parts never have, and a hue-only change is no defect there.
    """
    old = image[win]
    new = np.clip(patch, 0.0, 1.0).astype(np.float32)
    if is_gray(image):
        new = np.repeat((new @ _LUMA)[..., None], 3, axis=2)
    changed = np.abs(new - old).max(axis=2) >= VISIBLE_DELTA
    if region is not None:
        changed &= region[win]
    out = image.copy()
    out_win = out[win]
    out_win[changed] = new[changed]
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[win] = changed
    return out, mask


def _force_visible(image: np.ndarray, rng: np.random.Generator, region: np.ndarray | None) -> Defect:
    """Last resort when every draw was invisible: a small contrasting dot (always visible)."""
    cy, cx = _pick_center(rng, image, region)
    win = _window(image.shape, cy, cx, 1.0)
    old = image[win]
    bright = old.mean(axis=2, keepdims=True) > 0.5
    patch = np.where(bright, old * 0.4, old + (1.0 - old) * 0.6)
    return _commit(image, win, patch, region)


def _retry(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float,
    region: np.ndarray | None,
    draw: Callable[[float], Defect],
) -> Defect:
    """Call `draw(scale)` until its mask is non-empty, enlarging a little each time."""
    for _ in range(_MAX_ATTEMPTS):
        out, mask = draw(scale)
        if mask.any():
            return out, mask
        scale = min(scale * 1.6, 0.5)
    return _force_visible(image, rng, region)


def _draw_polyline(win: Window, pts: np.ndarray, thickness: int) -> np.ndarray:
    """Anti-aliased polyline coverage in [0, 1] over a window; pts are image (x, y)."""
    h, w = win[0].stop - win[0].start, win[1].stop - win[1].start
    canvas = np.zeros((h, w), np.uint8)
    local = pts - np.array([win[1].start, win[0].start], np.float64)
    fixed = np.round(local * 16.0).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [fixed], False, 255, thickness=max(1, int(thickness)), lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _wobbly_path(
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


def _blob_alpha(
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


def _light(rng: np.random.Generator, light_angle: float | None) -> tuple[float, float]:
    """Unit (x, y) vector pointing towards the light."""
    ang = rng.uniform(0.0, 2.0 * np.pi) if light_angle is None else float(light_angle)
    return math.cos(ang), math.sin(ang)


# --------------------------------------------------------------------------- painters


def scratch(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    bright: bool | None = None,
) -> Defect:
    """A thin (1-3 px) bright or dark gently curved line, like a tool or handling scratch.

    Length is `scale` x the shorter side; strength varies along the line so it
    looks worn in rather than drawn with a ruler.
    """
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        length = _extent(img, s, 3.0)
        pts = _wobbly_path(rng, cy, cx, length, jag=0.04, bend=rng.uniform(0.0, 0.9), step=4.0)
        thickness = 1 if length < 40 or rng.random() < 0.6 else int(rng.integers(2, 4))
        win = _window_of_points(img.shape, pts, thickness + 2)
        alpha = _draw_polyline(win, pts, thickness)
        alpha *= np.clip(0.75 + 0.25 * smooth_noise(alpha.shape, rng, cells=3.0), 0.35, 1.0)
        old = img[win]
        is_bright = rng.random() < 0.6 if bright is None else bright
        strength = rng.uniform(0.3, 0.6)
        a = (alpha * strength)[:, :, None]
        patch = 1.0 - (1.0 - old) * (1.0 - a) if is_bright else old * (1.0 - a)
        return _commit(img, win, patch, reg)

    return _retry(img, rng, scale, reg, draw)


def crack(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
) -> Defect:
    """A dark jagged line with a few side branches, like a fatigue or casting crack."""
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        length = _extent(img, s, 4.0)
        step = max(2.0, length / 14.0)
        main = _wobbly_path(rng, cy, cx, length, jag=0.45, bend=rng.uniform(0.0, 1.2), step=step)
        paths = [(main, 2 if length > 60 and rng.random() < 0.5 else 1)]
        for _ in range(int(rng.integers(0, 4)) if length > 12 else 0):
            start = main[int(rng.integers(1, len(main) - 1))] if len(main) > 2 else main[0]
            blen = length * rng.uniform(0.15, 0.4)
            branch = _wobbly_path(rng, 0.0, 0.0, blen, jag=0.5, bend=0.6, step=max(2.0, blen / 6.0))
            branch = branch - branch[0] + start
            paths.append((branch, 1))
        all_pts = np.vstack([p for p, _ in paths])
        win = _window_of_points(img.shape, all_pts, 4)
        alpha = np.zeros((win[0].stop - win[0].start, win[1].stop - win[1].start), np.float32)
        for pts, thickness in paths:
            alpha = np.maximum(alpha, _draw_polyline(win, pts, thickness))
        depth = rng.uniform(0.55, 0.85)
        patch = img[win] * (1.0 - depth * alpha)[:, :, None]
        return _commit(img, win, patch, reg)

    return _retry(img, rng, scale, reg, draw)


_STAIN_COLOURS = (
    ("rust", (0.62, 0.33, 0.14), "multiply"),
    ("oil", (0.45, 0.42, 0.36), "multiply"),
    ("coolant", (0.55, 0.62, 0.48), "multiply"),
    ("residue", (0.86, 0.85, 0.80), "normal"),
    ("grime", (0.20, 0.17, 0.13), "normal"),
)


def stain(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    colour: Sequence[float] | None = None,
) -> Defect:
    """A soft-edged, blotchy colour stain (rust, oil, coolant, residue, grime), blended in.

    Tinting stains multiply, so the surface texture shows through as on a
    real part; opaque ones (residue, grime) cover it partly. Some get a darker
    rim like a dried drop.
    """
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        radius = _extent(img, s, 3.0) / 2.0
        win = _window(img.shape, cy, cx, radius * 1.5 + 2)
        dy, dx = _local_grid(win, cy, cx)
        softness = max(1.0, radius * rng.uniform(0.2, 0.5))
        alpha = _blob_alpha(rng, dy, dx, radius, roughness=0.25, softness=softness)
        mottle = 1.0 + 0.25 * smooth_noise(alpha.shape, rng, cells=5.0)
        if rng.random() < 0.35:  # dried-drop ring: stronger near the edge
            alpha = alpha * (0.55 + 0.45 * np.clip(4.0 * alpha * (1.0 - alpha) + (1.0 - alpha), 0, 1))
        opacity = rng.uniform(0.45, 0.8)
        a = np.clip(alpha * mottle * opacity, 0.0, 1.0)[:, :, None]
        if colour is None:
            _, tint, mode = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
        else:
            tint, mode = colour, "normal"
        tint_arr = np.asarray(tint, np.float32) * rng.uniform(0.9, 1.1)
        old = img[win]
        target = old * tint_arr if mode == "multiply" else np.broadcast_to(tint_arr, old.shape)
        patch = old * (1.0 - a) + target * a
        return _commit(img, win, patch, reg)

    return _retry(img, rng, scale, reg, draw)


def dent(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    light_angle: float | None = None,
) -> Defect:
    """A shallow depression: darker on the side facing away from the light, brighter opposite.

    Shading comes from the gradient of an elliptical Gaussian height map lit
    from `light_angle` (radians, image x axis; random if None); the surface
    texture is also pulled slightly along that gradient, as a dent bends it.
    """
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        diameter = _extent(img, s, 4.0)
        sigma = diameter / 4.0
        win = _window(img.shape, cy, cx, 3.0 * sigma + 2)
        dy, dx = _local_grid(win, cy, cx)
        ang, ratio = rng.uniform(0.0, np.pi), rng.uniform(0.5, 1.0)
        c, sn = math.cos(ang), math.sin(ang)
        u, v = dx * c + dy * sn, (-dx * sn + dy * c) / ratio
        height = -np.exp(-(u * u + v * v) / (2.0 * sigma * sigma))
        gy, gx = np.gradient(height)
        lx, ly = _light(rng, light_angle)
        slope = -(gx * lx + gy * ly)  # Lambert: walls tilted towards the light get brighter
        peak = float(np.abs(slope).max())
        shade = slope / peak if peak > 1e-9 else slope
        strength = rng.uniform(0.25, 0.45)
        old = img[win]
        warp = min(2.0, 0.1 * sigma) * sigma
        map_x = (np.arange(old.shape[1], dtype=np.float32)[None, :] + warp * gx).astype(np.float32)
        map_y = (np.arange(old.shape[0], dtype=np.float32)[:, None] + warp * gy).astype(np.float32)
        bent = cv2.remap(old, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # the impact flattens the surface texture (burnishing), strongest at the bottom
        smooth = cv2.GaussianBlur(bent, (0, 0), 1.2)
        flat = (0.7 * -height)[:, :, None]
        bent = bent * (1.0 - flat) + smooth * flat
        # directional shading plus a little ambient occlusion, so the dent floor is darker too
        sh = (shade * strength + 0.35 * strength * height)[:, :, None]
        patch = bent * (1.0 + sh) + 0.08 * np.maximum(sh, 0.0)
        return _commit(img, win, patch.astype(np.float32), reg)

    return _retry(img, rng, scale, reg, draw)


def pits(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.05,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    light_angle: float | None = None,
    radius: tuple[float, float] = (0.7, 1.5),
) -> Defect:
    """A small cluster of tiny dark holes (blowholes, porosity), each with a lit far rim.

    `scale` sets the size of the cluster; the pits themselves stay tiny
    (`radius` range in pixels, growing only slowly with scale, at most 4 px).
    """
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        spread = _extent(img, s, 2.0) / 2.0
        n = int(rng.integers(2, 8))
        py = cy + rng.normal(0.0, spread / 2.0, n)
        px = cx + rng.normal(0.0, spread / 2.0, n)
        radii = np.minimum(4.0, rng.uniform(radius[0], radius[1], n) * (1.0 + spread / 40.0))
        pts = np.stack([px, py], axis=1)
        win = _window_of_points(img.shape, pts, 6.0)
        ys = np.arange(win[0].start, win[0].stop, dtype=np.float32)[None, :, None] + 0.5
        xs = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, None, :] + 0.5
        ddy, ddx = ys - py[:, None, None], xs - px[:, None, None]
        dist = np.sqrt(ddy * ddy + ddx * ddx)
        r = radii[:, None, None]
        hole = np.clip(r - dist + 0.5, 0.0, 1.0).max(axis=0)
        lx, ly = _light(rng, light_angle)
        facing = np.maximum(0.0, -(ddx * lx + ddy * ly) / np.maximum(dist, 1e-3))
        rim = (np.clip(1.0 - np.abs(dist - r - 0.7), 0.0, 1.0) * facing).max(axis=0)
        darkness = rng.uniform(0.6, 0.85)
        old = img[win]
        patch = old * (1.0 - darkness * hole)[:, :, None] + (0.3 * rim * (1.0 - hole))[:, :, None]
        return _commit(img, win, patch.astype(np.float32), reg)

    return _retry(img, rng, scale, reg, draw)


def cut(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    light_angle: float | None = None,
) -> Defect:
    """A slit: a dark, nearly straight opening that tapers at both ends, with lit/shadowed lips.

    Like a knife cut in leather or fabric: the gap is dark, the lip facing the
    light a little brighter and the other a little darker.
    """
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        length = _extent(img, s, 4.0)
        pts = _wobbly_path(rng, cy, cx, length, jag=0.03, bend=rng.uniform(0.0, 0.4), step=3.0)
        width = float(np.clip(length / 25.0, 1.0, 2.5))
        win = _window_of_points(img.shape, pts, width + 4)
        direction = pts[-1] - pts[0]
        direction = direction / max(float(np.linalg.norm(direction)), 1e-6)
        normal = np.array([-direction[1], direction[0]])
        lx, ly = _light(rng, light_angle)
        if normal @ np.array([lx, ly]) < 0:
            normal = -normal
        gap = _draw_polyline(win, pts, int(round(width)))
        offset = normal * (width / 2.0 + 1.0)
        lit = np.clip(_draw_polyline(win, pts + offset, 1) - gap, 0.0, 1.0)
        shadow = np.clip(_draw_polyline(win, pts - offset, 1) - gap, 0.0, 1.0)
        dy, dx = _local_grid(win, (pts[0, 1] + pts[-1, 1]) / 2, (pts[0, 0] + pts[-1, 0]) / 2)
        t = np.clip((dx * direction[0] + dy * direction[1]) / (length / 2.0 + 1e-6), -1.0, 1.0)
        taper = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
        old = img[win]
        darkness = rng.uniform(0.7, 0.9)
        shade = 1.0 - darkness * gap * taper - 0.25 * shadow * taper
        patch = old * shade[:, :, None] + (0.2 * lit * taper)[:, :, None]
        return _commit(img, win, patch.astype(np.float32), reg)

    return _retry(img, rng, scale, reg, draw)


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
        near = _window(image.shape, cy, cx, radius * 3.0 + 8)
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
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        radius = _extent(img, s, 3.0) / 2.0
        win = _window(img.shape, cy, cx, radius * 1.5 + 3)
        dy, dx = _local_grid(win, cy, cx)
        alpha = _blob_alpha(rng, dy, dx, radius, roughness=0.3, softness=1.0)
        rim = np.clip(cv2.dilate(alpha, np.ones((3, 3), np.uint8)) - alpha, 0.0, 1.0)
        old = img[win]
        bg = _background_fill(img, rng, win, background, reg, cy, cx, radius)
        patch = old * (1.0 - 0.3 * rim)[:, :, None]
        a = alpha[:, :, None]
        patch = patch * (1.0 - a) + bg * a
        return _commit(img, win, patch, reg)

    return _retry(img, rng, scale, reg, draw)


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
    img = _as_image(image)
    reg = _as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        half = _extent(img, s, 4.0) / 2.0
        win = _window(img.shape, cy, cx, half + 1)
        dy, dx = _local_grid(win, cy, cx)
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
        return _commit(img, win, patch, reg)

    return _retry(img, rng, scale, reg, draw)


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
    img = _as_image(image)
    reg = _as_region(region, img)
    h, w = img.shape[:2]

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else _pick_center(rng, img, reg)
        size = _extent(img, s, 3.0)
        half = size / 2.0
        win = _window(img.shape, cy, cx, half + 1)
        sy, sx = _pick_center(rng, img, reg)
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
            img, matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        dy, dx = _local_grid(win, cy, cx)
        if rng.random() < 0.5:
            inside = np.minimum(half - np.abs(dy), half - np.abs(dx))
        else:
            inside = half - np.sqrt(dy * dy + dx * dx)
        alpha = np.clip(inside / 1.5 + 0.5, 0.0, 1.0)[:, :, None]
        patch = img[win] * (1.0 - alpha) + pasted * alpha
        return _commit(img, win, patch, reg)

    return _retry(img, rng, scale, reg, draw)


# --------------------------------------------------------------------------- choosing

Painter = Callable[..., Defect]

DEFECTS: dict[str, Painter] = {
    "scratch": scratch,
    "crack": crack,
    "stain": stain,
    "dent": dent,
    "pits": pits,
    "cut": cut,
    "missing_material": missing_material,
    "perlin_foreign_texture": perlin_foreign_texture,
    "cut_paste": cut_paste,
}
DEFECT_KINDS: tuple[str, ...] = tuple(DEFECTS)


def _check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """Known kinds as a tuple (all when None); unknown names raise, listing the choices."""
    names = DEFECT_KINDS if kinds is None else tuple(kinds)
    if not names:
        raise ValueError("kinds is empty")
    unknown = [k for k in names if k not in DEFECTS]
    if unknown:
        raise ValueError(f"unknown defect kind(s) {unknown}; choose from {list(DEFECT_KINDS)}")
    return names


def _check_scale_range(scale_range: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in scale_range)
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {scale_range}")
    return lo, hi


def random_defect(
    image: np.ndarray,
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    scale_range: tuple[float, float] = (0.01, 0.2),
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Paint one defect of a random kind and log-uniform random scale.

    With `foreground` (bool (H, W), the part) the defect is centred on the
    part and changes only part pixels, so it never lands on the background
    where an inspector would not call it a defect.
    """
    names = _check_kinds(kinds)
    lo, hi = _check_scale_range(scale_range)
    kind = names[int(rng.integers(len(names)))]
    scale = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    out, mask = DEFECTS[kind](image, rng, scale, region=foreground)
    return out, mask, kind


@dataclass(frozen=True)
class DefectSettings:
    """How synthetic defects were generated, stored with a model as JSON.

    `probability` is the chance that a training sample gets a defect at all;
    the rest stay good (their mask is empty).
    """

    kinds: tuple[str, ...] = DEFECT_KINDS
    scale_range: tuple[float, float] = (0.01, 0.2)
    probability: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", _check_kinds(self.kinds))
        object.__setattr__(self, "scale_range", _check_scale_range(self.scale_range))
        p = float(self.probability)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        object.__setattr__(self, "probability", p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists, not tuples)."""
        return {"kinds": list(self.kinds), "scale_range": list(self.scale_range), "probability": self.probability}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DefectSettings:
        """Inverse of `to_dict`; missing keys take defaults, unknown keys are an error."""
        extra = set(data) - {"kinds", "scale_range", "probability"}
        if extra:
            raise ValueError(f"unknown DefectSettings field(s): {sorted(extra)}")
        defaults = cls()
        return cls(
            kinds=tuple(data.get("kinds", defaults.kinds)),
            scale_range=tuple(data.get("scale_range", defaults.scale_range)),  # type: ignore[arg-type]
            probability=float(data.get("probability", defaults.probability)),
        )

    def apply(
        self, image: np.ndarray, rng: np.random.Generator, foreground: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, str | None]:
        """With `probability`, paint a random defect; else return the image with an empty mask."""
        img = _as_image(image)
        if rng.random() >= self.probability:
            return img, np.zeros(img.shape[:2], dtype=bool), None
        return random_defect(img, rng, self.kinds, self.scale_range, foreground)
