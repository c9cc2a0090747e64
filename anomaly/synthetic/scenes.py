"""The two demo scenes, rendered procedurally: a turned steel washer and a denim-like twill fabric,
each with the defects that can be painted on it. The dataset writer (demo.py) renders,
damages and saves them in MVTec AD layout.

- "washer": a turned steel washer on a dark conveyor, as a fixed monochrome camera on a
  line sees it: small jitter in position, rotation of the machining marks and brightness.
  Defects: scratch, crack, dent, stain, missing (a chunk broken off the rim).
- "texture": a denim-like 3/1 twill fabric filling the frame, like the MVTec texture
  categories. Defects: scratch, stain, pits, cut.

Renders are clean (noise-free); the writer adds sensor noise. numpy + OpenCV only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from anomaly.synthetic import defects

WASHER_DEFECTS = ("scratch", "crack", "dent", "stain", "missing")
TEXTURE_DEFECTS = ("scratch", "stain", "pits", "cut")

LIGHT_ANGLE = math.radians(-135.0)  # light from the top left, as on the demo line


@dataclass(frozen=True)
class Render:
    """A clean (noise-free) rendering: image, where the part is, and what lies behind it."""

    image: np.ndarray
    foreground: np.ndarray  # bool (H, W): part surface a defect may touch (edges excluded)
    part: np.ndarray  # bool (H, W): every pixel the part covers at all, edges included
    background: np.ndarray  # (H, W, 3): the scene without the part (for missing material)
    rim_point: Callable[[np.random.Generator], tuple[float, float]]  # (y, x) on the outer edge


# --------------------------------------------------------------------------- washer


def _polar_streaks(rng: np.random.Generator, radius: float, n_theta: int = 1024) -> np.ndarray:
    """Fine tangential streaks of a turned face, in polar form (radius rows x angle cols)."""
    n_r = int(math.ceil(radius * 2)) + 4
    raw = rng.standard_normal((n_r, n_theta)).astype(np.float32)
    pad = 48
    wrapped = np.concatenate([raw[:, -pad:], raw, raw[:, :pad]], axis=1)
    blurred = cv2.GaussianBlur(wrapped, (0, 0), sigmaX=10.0, sigmaY=0.6)[:, pad:-pad]
    return blurred / max(float(blurred.std()), 1e-6)


def _turning_rings(rng: np.random.Generator, rr: np.ndarray) -> np.ndarray:
    """Concentric turning marks: a few sinusoids in radius plus fine random rings."""
    rings = np.zeros_like(rr)
    for _ in range(3):
        period = rng.uniform(1.6, 4.5)
        rings += np.sin(rr * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)) / 3.0
    profile = cv2.GaussianBlur(rng.standard_normal((1, 2048)).astype(np.float32), (0, 0), 1.2).ravel()
    profile = (profile / max(float(profile.std()), 1e-6)).astype(np.float32)
    idx = np.clip((rr * 2.0).astype(np.int64), 0, profile.size - 1)
    return 0.5 * rings + 0.7 * profile[idx]


def _washer_background(rng: np.random.Generator, size: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A plain dark conveyor belt under a light from the top left, with faint mottling."""
    lx, ly = math.cos(LIGHT_ANGLE), math.sin(LIGHT_ANGLE)
    ramp = ((xs - size / 2) * lx + (ys - size / 2) * ly) / size
    mottle = defects.smooth_noise((size, size), rng, cells=6.0)
    level = 0.17 * (1.0 + 0.35 * ramp) * (1.0 + 0.025 * mottle)
    colour = np.array([0.95, 1.0, 1.04], np.float32)
    return (level[:, :, None] * colour).astype(np.float32)


def render_washer(rng: np.random.Generator, size: int = 256) -> Render:
    """Render one good washer: turned steel ring, bevelled edges, shadow, lighting gradient.

    Part-to-part variation: centre jitter of a few pixels, random orientation
    of the machining marks, +-4 % brightness, +-0.5 % radius.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cy = size / 2 + rng.uniform(-0.012, 0.012) * size
    cx = size / 2 + rng.uniform(-0.012, 0.012) * size
    outer = 0.37 * size * rng.uniform(0.995, 1.005)
    inner = 0.165 * size * rng.uniform(0.995, 1.005)
    dy, dx = ys - cy, xs - cx
    rr = np.sqrt(dy * dy + dx * dx)
    theta = np.arctan2(dy, dx)
    spin = rng.uniform(0, 2 * np.pi)
    coverage = np.clip(outer - rr + 0.5, 0, 1) * np.clip(rr - inner + 0.5, 0, 1)

    lx, ly = math.cos(LIGHT_ANGLE), math.sin(LIGHT_ANGLE)
    background = _washer_background(rng, size, ys, xs)
    shadow = cv2.GaussianBlur(np.roll(coverage, (3, 3), axis=(0, 1)), (0, 0), 3.0)
    background = background * (1.0 - 0.45 * shadow)[:, :, None]

    streaks = _polar_streaks(rng, outer)
    n_theta = streaks.shape[1]
    map_x = (((theta + spin) % (2 * np.pi)) * (n_theta / (2 * np.pi))).astype(np.float32)
    map_y = rr.astype(np.float32)
    tangential = cv2.remap(streaks, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    rings = _turning_rings(rng, rr)

    ramp = ((xs - size / 2) * lx + (ys - size / 2) * ly) / size
    d_theta = np.angle(np.exp(1j * 2 * (theta - LIGHT_ANGLE))) / 2  # angle to the light axis, mod pi
    bowtie = np.exp(-(d_theta**2) / (2 * 0.22**2))
    radial_light = (dx * lx + dy * ly) / np.maximum(rr, 1e-3)  # +1 where the rim faces the light
    bevel_w = 0.012 * size
    outer_bevel = np.clip((rr - (outer - bevel_w)) / bevel_w, 0, 1)
    inner_bevel = np.clip(((inner + bevel_w) - rr) / bevel_w, 0, 1)
    bevel = 0.28 * radial_light * outer_bevel - 0.28 * radial_light * inner_bevel

    metal = 0.50 * rng.uniform(0.96, 1.04)
    metal = metal * (1.0 + 0.25 * ramp) + 0.16 * bowtie
    metal = metal + 0.025 * rings + 0.03 * tangential + bevel - 0.06 * (outer_bevel + inner_bevel)
    steel = np.array([0.97, 0.99, 1.02], np.float32)
    part = np.clip(metal, 0, 1)[:, :, None] * steel

    a = coverage[:, :, None]
    image = cv2.GaussianBlur((background * (1 - a) + part * a).astype(np.float32), (0, 0), 0.5)
    background = cv2.GaussianBlur(background.astype(np.float32), (0, 0), 0.5)
    kernel = np.ones((3, 3), np.uint8)
    foreground = cv2.erode((coverage > 0.5).astype(np.uint8), kernel) > 0
    covered = cv2.dilate((coverage > 0).astype(np.uint8), kernel) > 0

    def rim_point(r: np.random.Generator) -> tuple[float, float]:
        ang = r.uniform(0, 2 * np.pi)
        rad = outer - r.uniform(0.0, 0.02) * size
        return cy + rad * math.sin(ang), cx + rad * math.cos(ang)

    return Render(image.astype(np.float32), foreground, covered, background, rim_point)


def paint_washer_defect(kind: str, render: Render, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one realistic washer defect, restricted to the washer."""
    img, fg = render.image, render.foreground
    if kind == "scratch":
        return defects.scratch(img, rng, rng.uniform(0.08, 0.3), region=fg)
    if kind == "crack":
        return defects.crack(img, rng, rng.uniform(0.07, 0.18), region=fg)
    if kind == "dent":
        return defects.dent(img, rng, rng.uniform(0.07, 0.15), region=fg, light_angle=LIGHT_ANGLE)
    if kind == "stain":
        return defects.stain(img, rng, rng.uniform(0.05, 0.14), region=fg)
    if kind == "missing":
        return defects.missing_material(
            img,
            rng,
            rng.uniform(0.05, 0.1),
            region=render.part,
            center=render.rim_point(rng),
            background=render.background,
        )
    raise ValueError(f"unknown washer defect {kind!r}")


# --------------------------------------------------------------------------- texture


def render_texture(rng: np.random.Generator, size: int = 256) -> Render:
    """Render a denim-like 3/1 twill fabric filling the frame.

    Indigo warp threads float over three white weft threads, giving the
    diagonal rib; thread thickness and shade vary per thread, fibres are
    stretched noise along each thread, and a smooth displacement field keeps
    the weave from looking machine-perfect. Rendered at 2x and downsampled so
    thread edges are anti-aliased.
    """
    ss = 2 * size
    period = ss / 34.0
    ys, xs = np.mgrid[0:ss, 0:ss].astype(np.float32)
    ang = math.radians(rng.uniform(-1.5, 1.5))
    c, s = math.cos(ang), math.sin(ang)
    warp_amp = 0.18 * period
    ux = xs * c + ys * s + rng.uniform(0, 4 * period) + warp_amp * defects.smooth_noise((ss, ss), rng, 5.0)
    vy = -xs * s + ys * c + rng.uniform(0, 4 * period) + warp_amp * defects.smooth_noise((ss, ss), rng, 5.0)
    u, v = ux / period, vy / period
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - i, v - j
    warp_on_top = ((i - j) % 4) != 3

    n_threads = int(ss / period) + 16
    warp_shade = 1.0 + 0.06 * rng.standard_normal(n_threads * 2)
    weft_shade = 1.0 + 0.05 * rng.standard_normal(n_threads * 2)
    along_y = cv2.GaussianBlur(rng.standard_normal((ss, ss)).astype(np.float32), (0, 0), sigmaX=0.7, sigmaY=4.0)
    along_x = cv2.GaussianBlur(rng.standard_normal((ss, ss)).astype(np.float32), (0, 0), sigmaX=4.0, sigmaY=0.7)
    along_y = along_y / along_y.std()
    along_x = along_x / along_x.std()

    warp_profile = np.sin(np.pi * fu) ** 0.6 * (0.8 + 0.2 * np.sin(np.pi * fv))
    weft_profile = np.sin(np.pi * fv) ** 0.6 * (0.8 + 0.2 * np.sin(np.pi * fu))
    warp_level = warp_profile * warp_shade[i % warp_shade.size] * (1.0 + 0.1 * along_y)
    weft_level = weft_profile * weft_shade[j % weft_shade.size] * (1.0 + 0.1 * along_x)
    indigo = np.array([0.19, 0.27, 0.45], np.float32) * rng.uniform(0.97, 1.03)
    cotton = np.array([0.60, 0.61, 0.62], np.float32)
    gap = np.array([0.08, 0.10, 0.16], np.float32)
    thread = np.where(warp_on_top[:, :, None], warp_level[:, :, None] * indigo, weft_level[:, :, None] * cotton)
    level = np.where(warp_on_top, warp_profile, weft_profile)[:, :, None]
    fabric = gap * (1.0 - level) + thread

    light = 1.0 + 0.06 * (xs + ys - ss) / ss
    fabric = fabric * light[:, :, None] * rng.uniform(0.97, 1.03)
    image = cv2.resize(fabric.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    image = np.clip(image, 0, 1).astype(np.float32)
    foreground = np.ones((size, size), dtype=bool)

    def anywhere(r: np.random.Generator) -> tuple[float, float]:
        return float(r.uniform(0, size)), float(r.uniform(0, size))

    return Render(image, foreground, foreground, image, anywhere)


def paint_texture_defect(kind: str, render: Render, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one fabric defect anywhere in the frame."""
    img = render.image
    if kind == "scratch":
        return defects.scratch(img, rng, rng.uniform(0.1, 0.3), bright=True)
    if kind == "stain":
        return defects.stain(img, rng, rng.uniform(0.06, 0.16))
    if kind == "pits":
        return defects.pits(img, rng, rng.uniform(0.03, 0.08), light_angle=LIGHT_ANGLE, radius=(1.2, 2.2))
    if kind == "cut":
        return defects.cut(img, rng, rng.uniform(0.08, 0.22), light_angle=LIGHT_ANGLE)
    raise ValueError(f"unknown texture defect {kind!r}")
