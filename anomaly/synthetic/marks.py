"""Painters of marks on a surface: scratch, crack, stain, dent, pits, cut."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from anomaly.synthetic.canvas import (
    Defect,
    as_image,
    as_region,
    blob_alpha,
    commit,
    draw_polyline,
    extent,
    light,
    local_grid,
    pick_center,
    retry,
    smooth_noise,
    window,
    window_of_points,
    wobbly_path,
)

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
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        length = extent(img, s, 3.0)
        pts = wobbly_path(rng, cy, cx, length, jag=0.04, bend=rng.uniform(0.0, 0.9), step=4.0)
        thickness = 1 if length < 40 or rng.random() < 0.6 else int(rng.integers(2, 4))
        win = window_of_points(img.shape, pts, thickness + 2)
        alpha = draw_polyline(win, pts, thickness)
        alpha *= np.clip(0.75 + 0.25 * smooth_noise(alpha.shape, rng, cells=3.0), 0.35, 1.0)
        old = img[win]
        is_bright = rng.random() < 0.6 if bright is None else bright
        strength = rng.uniform(0.3, 0.6)
        a = (alpha * strength)[:, :, None]
        patch = 1.0 - (1.0 - old) * (1.0 - a) if is_bright else old * (1.0 - a)
        return commit(img, win, patch, reg)

    return retry(img, rng, scale, reg, draw)


def crack(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 0.1,
    *,
    region: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
) -> Defect:
    """A dark jagged line with a few side branches, like a fatigue or casting crack."""
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        length = extent(img, s, 4.0)
        step = max(2.0, length / 14.0)
        main = wobbly_path(rng, cy, cx, length, jag=0.45, bend=rng.uniform(0.0, 1.2), step=step)
        paths = [(main, 2 if length > 60 and rng.random() < 0.5 else 1)]
        for _ in range(int(rng.integers(0, 4)) if length > 12 else 0):
            start = main[int(rng.integers(1, len(main) - 1))] if len(main) > 2 else main[0]
            blen = length * rng.uniform(0.15, 0.4)
            branch = wobbly_path(rng, 0.0, 0.0, blen, jag=0.5, bend=0.6, step=max(2.0, blen / 6.0))
            branch = branch - branch[0] + start
            paths.append((branch, 1))
        all_pts = np.vstack([p for p, _ in paths])
        win = window_of_points(img.shape, all_pts, 4)
        alpha = np.zeros((win[0].stop - win[0].start, win[1].stop - win[1].start), np.float32)
        for pts, thickness in paths:
            alpha = np.maximum(alpha, draw_polyline(win, pts, thickness))
        depth = rng.uniform(0.55, 0.85)
        patch = img[win] * (1.0 - depth * alpha)[:, :, None]
        return commit(img, win, patch, reg)

    return retry(img, rng, scale, reg, draw)


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
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        radius = extent(img, s, 3.0) / 2.0
        win = window(img.shape, cy, cx, radius * 1.5 + 2)
        dy, dx = local_grid(win, cy, cx)
        softness = max(1.0, radius * rng.uniform(0.2, 0.5))
        alpha = blob_alpha(rng, dy, dx, radius, roughness=0.25, softness=softness)
        mottle = 1.0 + 0.25 * smooth_noise(alpha.shape, rng, cells=5.0)
        if rng.random() < 0.35:  # dried-drop ring: stronger near the edge
            alpha = alpha * (0.55 + 0.45 * np.clip(4.0 * alpha * (1.0 - alpha) + (1.0 - alpha), 0, 1))
        opacity = rng.uniform(0.45, 0.8)
        a = np.clip(alpha * mottle * opacity, 0.0, 1.0)[:, :, None]
        tint: Sequence[float]
        if colour is None:
            _, tint, mode = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
        else:
            tint, mode = colour, "normal"
        tint_arr = np.asarray(tint, np.float32) * rng.uniform(0.9, 1.1)
        old = img[win]
        target = old * tint_arr if mode == "multiply" else np.broadcast_to(tint_arr, old.shape)
        patch = old * (1.0 - a) + target * a
        return commit(img, win, patch, reg)

    return retry(img, rng, scale, reg, draw)


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
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        diameter = extent(img, s, 4.0)
        sigma = diameter / 4.0
        win = window(img.shape, cy, cx, 3.0 * sigma + 2)
        dy, dx = local_grid(win, cy, cx)
        ang, ratio = rng.uniform(0.0, np.pi), rng.uniform(0.5, 1.0)
        c, sn = math.cos(ang), math.sin(ang)
        u, v = dx * c + dy * sn, (-dx * sn + dy * c) / ratio
        height = -np.exp(-(u * u + v * v) / (2.0 * sigma * sigma))
        gy, gx = np.gradient(height)
        lx, ly = light(rng, light_angle)
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
        return commit(img, win, patch.astype(np.float32), reg)

    return retry(img, rng, scale, reg, draw)


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
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        spread = extent(img, s, 2.0) / 2.0
        n = int(rng.integers(2, 8))
        py = cy + rng.normal(0.0, spread / 2.0, n)
        px = cx + rng.normal(0.0, spread / 2.0, n)
        radii = np.minimum(4.0, rng.uniform(radius[0], radius[1], n) * (1.0 + spread / 40.0))
        pts = np.stack([px, py], axis=1)
        win = window_of_points(img.shape, pts, 6.0)
        ys = np.arange(win[0].start, win[0].stop, dtype=np.float32)[None, :, None] + 0.5
        xs = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, None, :] + 0.5
        ddy, ddx = ys - py[:, None, None], xs - px[:, None, None]
        dist = np.sqrt(ddy * ddy + ddx * ddx)
        r = radii[:, None, None]
        hole = np.clip(r - dist + 0.5, 0.0, 1.0).max(axis=0)
        lx, ly = light(rng, light_angle)
        facing = np.maximum(0.0, -(ddx * lx + ddy * ly) / np.maximum(dist, 1e-3))
        rim = (np.clip(1.0 - np.abs(dist - r - 0.7), 0.0, 1.0) * facing).max(axis=0)
        darkness = rng.uniform(0.6, 0.85)
        old = img[win]
        patch = old * (1.0 - darkness * hole)[:, :, None] + (0.3 * rim * (1.0 - hole))[:, :, None]
        return commit(img, win, patch.astype(np.float32), reg)

    return retry(img, rng, scale, reg, draw)


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
    img = as_image(image)
    reg = as_region(region, img)

    def draw(s: float) -> Defect:
        cy, cx = center if center is not None else pick_center(rng, img, reg)
        length = extent(img, s, 4.0)
        pts = wobbly_path(rng, cy, cx, length, jag=0.03, bend=rng.uniform(0.0, 0.4), step=3.0)
        width = float(np.clip(length / 25.0, 1.0, 2.5))
        win = window_of_points(img.shape, pts, width + 4)
        direction = pts[-1] - pts[0]
        direction = direction / max(float(np.linalg.norm(direction)), 1e-6)
        normal = np.array([-direction[1], direction[0]])
        lx, ly = light(rng, light_angle)
        if normal @ np.array([lx, ly]) < 0:
            normal = -normal
        gap = draw_polyline(win, pts, int(round(width)))
        offset = normal * (width / 2.0 + 1.0)
        lit = np.clip(draw_polyline(win, pts + offset, 1) - gap, 0.0, 1.0)
        shadow = np.clip(draw_polyline(win, pts - offset, 1) - gap, 0.0, 1.0)
        dy, dx = local_grid(win, (pts[0, 1] + pts[-1, 1]) / 2, (pts[0, 0] + pts[-1, 0]) / 2)
        t = np.clip((dx * direction[0] + dy * direction[1]) / (length / 2.0 + 1e-6), -1.0, 1.0)
        taper = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
        old = img[win]
        darkness = rng.uniform(0.7, 0.9)
        shade = 1.0 - darkness * gap * taper - 0.25 * shadow * taper
        patch = old * shade[:, :, None] + (0.2 * lit * taper)[:, :, None]
        return commit(img, win, patch.astype(np.float32), reg)

    return retry(img, rng, scale, reg, draw)
