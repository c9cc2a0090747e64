"""The writer of a small, deterministic demo dataset in MVTec AD layout (`anomaly synth`).

The scenes and their defects are rendered in scenes.py; this module draws each image's
random stream, paints the defects, adds sensor noise and writes the files. Lets anyone try the tool, and lets tests and CI train and score models,
without downloading a real dataset. Layout under `out_dir/<category>/`:

    train/good/000.png ...            good parts only (what a model learns from)
    test/good/000.png ...             good parts held out
    test/<defect>/000.png ...         defective parts
    ground_truth/<defect>/000_mask.png   uint8 0/255 single-channel masks

Categories:
- "washer": a turned steel washer on a dark conveyor, as a fixed monochrome
  camera on a line sees it (single-channel PNGs; `read_image` makes them
  RGB): small jitter in position, rotation of the machining marks,
  brightness and sensor noise. Defects: scratch, crack, dent, stain, missing
  (a chunk broken off the rim). Mono also keeps the default set small:
  sensor noise in three channels triples the PNG size.
- "texture": a denim-like 3/1 twill fabric filling the frame, like the MVTec
  texture categories. Defects: scratch, stain, pits, cut.

Every image gets its own random stream derived from (seed, category, split,
index), so the same seed writes byte-identical files and changing one count
does not change the other images. numpy + OpenCV only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly.inspection.imageio import save_image
from anomaly.synthetic import defects
from anomaly.synthetic.scenes import (
    TEXTURE_DEFECTS,
    WASHER_DEFECTS,
    Render,
    paint_texture_defect,
    paint_washer_defect,
    render_texture,
    render_washer,
)

CATEGORIES = ("washer", "texture")

_SPLITS = {"train": 0, "test_good": 1, "test_defect": 2}


@dataclass(frozen=True)
class _Category:
    """How one category is rendered, damaged and recorded."""

    render: Callable[[np.random.Generator, int], Render]
    paint: Callable[[str, Render, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    defect_kinds: tuple[str, ...]
    noise: float  # sensor noise standard deviation at mid grey
    mono: bool  # saved as single-channel PNG, as from a monochrome line camera
    description: str


_CATEGORY_SPECS = {
    "washer": _Category(
        render_washer,
        paint_washer_defect,
        WASHER_DEFECTS,
        0.006,
        True,
        "a turned steel washer on a dark conveyor, lit from the top left, seen from above",
    ),
    "texture": _Category(
        render_texture,
        paint_texture_defect,
        TEXTURE_DEFECTS,
        0.006,
        False,
        "a denim-like 3/1 twill fabric filling the frame",
    ),
}


def _rng(seed: int, category: str, split: str, index: int, defect: int = 0) -> np.random.Generator:
    """An independent random stream per image, so every file depends only on its own key."""
    key = [int(seed), CATEGORIES.index(category), _SPLITS[split], int(defect), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def _sensor(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """What the camera adds after the scene: shot noise (grows with brightness) plus read noise.

    `sigma` is the noise at mid grey; dark areas get less, as on a real sensor.
    """
    std = np.sqrt(np.float32(0.002**2) + np.float32(2.0 * sigma**2) * np.clip(image, 0, 1))
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * std
    return np.clip(noisy, 0, 1).astype(np.float32)


def _to_gray(image: np.ndarray) -> np.ndarray:
    """Luminance (Rec. 601 weights) of an RGB image, float32 (H, W): what a mono camera records."""
    return (image @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def _paint_visible(
    spec: _Category, kind: str, render: Render, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A defective image in the saved colour form and its exact, non-empty mask.

    For a mono category the defect is painted in colour and then seen in
    grey: pixels whose grey value no longer changes visibly are restored and
    dropped from the mask (a tint change of equal luminance is invisible to
    a mono camera). A draw that vanishes entirely is redrawn.
    """
    for _ in range(8):
        image, mask = spec.paint(kind, render, rng)
        if not spec.mono:
            return image, mask
        clean, damaged = _to_gray(render.image), _to_gray(image)
        visible = mask & (np.abs(damaged - clean) >= defects.VISIBLE_DELTA)
        if visible.any():
            return np.where(visible, damaged, clean).astype(np.float32), visible
    raise RuntimeError(f"could not draw a visible {kind!r} defect")  # pragma: no cover - never seen


def _clear_stale(folders: list[Path]) -> None:
    """Remove PNGs a previous run (with larger counts) left in the folders we write."""
    for folder in folders:
        if folder.is_dir():
            for old in folder.glob("*.png"):
                old.unlink()


def _readme(category: str, spec: _Category, seed: int, size: int, counts: dict[str, int]) -> str:
    lines = [
        f"Synthetic '{category}' dataset (MVTec AD layout), rendered procedurally by anomaly.synthetic.demo.",
        "",
        f"Scene: {spec.description}.",
        f"Generated with: generate_dataset(out_dir, seed={seed}, category={category!r}, size={size}, "
        f"n_train={counts['train']}, n_test_good={counts['test_good']}, n_per_defect={counts['per_defect']})",
        "or: python -m anomaly.synthetic.demo OUT_DIR --category " + category + f" --seed {seed}",
        "The same arguments always write byte-identical files.",
        "",
        f"train/good: {counts['train']} good images; test/good: {counts['test_good']} good images.",
        f"test/<defect>: {counts['per_defect']} images each for: {', '.join(spec.defect_kinds)}.",
        "ground_truth/<defect>/<name>_mask.png: 0/255 masks, 255 exactly where the defect visibly changed",
        "the scene (by at least 4 grey levels, before sensor noise is added).",
        "Defects are painted with anomaly.synthetic.defects; good images vary slightly (position, orientation,",
        "brightness, sensor noise) as parts on a production line do.",
        ("Images are single-channel (monochrome camera)." if spec.mono else "Images are RGB."),
        "",
        "The images are synthetic and free to use for any purpose.",
        "",
    ]
    return "\n".join(lines)


def generate_dataset(
    out_dir: Path,
    seed: int = 0,
    category: str = "washer",
    size: int = 256,
    n_train: int = 60,
    n_test_good: int = 12,
    n_per_defect: int = 5,
) -> Path:
    """Write the demo dataset for `category` under out_dir/<category>/ and return that folder.

    Deterministic: the same arguments give byte-identical files. Existing PNGs
    in the folders written are replaced, so a rerun with smaller counts leaves
    no stale images behind.
    """
    if category not in _CATEGORY_SPECS:
        raise ValueError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if min(n_train, n_test_good, n_per_defect) < 0:
        raise ValueError("image counts must not be negative")
    spec = _CATEGORY_SPECS[category]
    root = Path(out_dir) / category
    folders = [root / "train" / "good", root / "test" / "good"]
    folders += [root / "test" / k for k in spec.defect_kinds] + [root / "ground_truth" / k for k in spec.defect_kinds]
    _clear_stale(folders)
    root.mkdir(parents=True, exist_ok=True)

    for split, folder, count in (("train", folders[0], n_train), ("test_good", folders[1], n_test_good)):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = _rng(seed, category, split, i)
            render = spec.render(rng, size)
            image = _to_gray(render.image) if spec.mono else render.image
            save_image(folder / f"{i:03d}.png", _sensor(image, rng, spec.noise))

    for d, kind in enumerate(spec.defect_kinds):
        for i in range(n_per_defect):
            rng = _rng(seed, category, "test_defect", i, defect=d + 1)
            render = spec.render(rng, size)
            image, mask = _paint_visible(spec, kind, render, rng)
            save_image(root / "test" / kind / f"{i:03d}.png", _sensor(image, rng, spec.noise))
            save_image(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)

    counts = {"train": n_train, "test_good": n_test_good, "per_defect": n_per_defect}
    (root / "README.txt").write_text(_readme(category, spec, seed, size, counts), encoding="utf-8")
    return root


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m anomaly.synthetic.demo OUT_DIR [--category washer] [--seed 0]."""
    parser = argparse.ArgumentParser(description="Write a synthetic MVTec-style demo dataset.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--category", default="washer", choices=CATEGORIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate_dataset(args.out_dir, seed=args.seed, category=args.category, size=args.size)
    print(f"wrote {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
