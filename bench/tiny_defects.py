"""Small defects: does a defect of ~0.05% of the image area still get found?

    python bench/tiny_defects.py [--sizes 256 512] [--epochs 20] [--fit-modes auto letterbox]
    python bench/tiny_defects.py --strip 4 --sizes 256 --fit-modes letterbox auto

Generates washers at 512x512 (anomaly.synthetic.demo), trains the default feature model at
each working size, then paints one tiny defect (pits / scratch / crack, exact masks)
on each held-out good test part, sized so the defect covers about 0.05% of the image
(~130 px of 262,144), and measures image AUROC (tiny-defect parts vs the untouched good
parts) and pixel AUROC. Appends rows to bench/results_tiny.md.

`--strip N`: the images are strips of N washers of 256 px side by side (a row of parts
on a conveyor, 256 x 256N), the tiny defect on one of them; compares fitting the strip
into one square (letterbox) with cutting it into tiles (auto).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anomaly.evaluation import metrics
from anomaly.config import ModelConfig, TrainConfig
from anomaly.synthetic.defects import DEFECTS
from anomaly.training.detector import Detector
from anomaly.inspection.imageio import read_image, save_image
from anomaly.synthetic.demo import generate_dataset

OUT = Path(__file__).resolve().parent / "results_tiny.md"


def tiny_defect(img: np.ndarray, rng: np.random.Generator, target_area: float,
                scales: tuple[float, float] = (0.005, 0.03)) -> tuple[np.ndarray, np.ndarray, str]:
    """Paint defects until the mask is close to target_area (fraction of the image)."""
    part = img.mean(axis=2) > 0.25
    for _ in range(200):
        kind = ["pits", "scratch", "crack"][int(rng.integers(3))]
        bad, mask = DEFECTS[kind](img, rng, scale=float(rng.uniform(*scales)), region=part)
        if 0.5 * target_area <= mask.mean() <= 2.0 * target_area:
            return bad, mask, kind
    raise RuntimeError("could not draw a defect of the requested size")


def _strips(folder: Path, n: int) -> list[np.ndarray]:
    parts = [read_image(p) for p in sorted(folder.glob("*.png"))]
    return [np.concatenate(parts[i : i + n], axis=1) for i in range(0, len(parts) - n + 1, n)]


def _on_one_part(strip: np.ndarray, rng: np.random.Generator, area: float, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A tiny defect on one part of a strip (its area a fraction of the whole strip)."""
    w = strip.shape[1] // n
    j = int(rng.integers(n))
    # the generator's scale is relative to the image it paints on: a 256 px part, not the strip
    bad, part_mask, kind = tiny_defect(strip[:, j * w : (j + 1) * w], rng, area * n, scales=(0.02, 0.12))
    out, mask = strip.copy(), np.zeros(strip.shape[:2], bool)
    out[:, j * w : (j + 1) * w], mask[:, j * w : (j + 1) * w] = bad, part_mask
    return out, mask, kind


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--area", type=float, default=0.0005)
    p.add_argument("--model", default="feature_ae", help="model family (ModelConfig.kind)")
    p.add_argument("--fit-modes", nargs="+", default=["auto"], help="ModelConfig.fit_mode values to compare")
    p.add_argument("--strip", type=int, default=0, help="parts per strip (0: single 512 px washers)")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if a.strip:
        washers = generate_dataset(tmp / "washers", seed=7, category="washer", size=256, n_train=30 * a.strip,
                                   n_test_good=12 * a.strip, n_per_defect=1)
        data = tmp / "strips"
        for i, strip in enumerate(_strips(washers / "train" / "good", a.strip)):
            save_image(data / f"{i:03d}.png", strip)
        good_imgs = _strips(washers / "test" / "good", a.strip)
        what = f"{a.strip} washers 256 x {256 * a.strip} px"
    else:
        data = generate_dataset(tmp, seed=7, category="washer", size=512, n_train=60, n_test_good=24, n_per_defect=1)
        good_imgs = [read_image(g) for g in sorted((data / "test" / "good").glob("*.png"))]
        what = "washer 512 px"
    rng = np.random.default_rng(0)
    painted = [tiny_defect(img, rng, a.area) if not a.strip else _on_one_part(img, rng, a.area, a.strip) for img in good_imgs]
    areas = [m.mean() for _, m, _ in painted]
    pixels = good_imgs[0].shape[0] * good_imgs[0].shape[1]
    rows = []
    for size in a.sizes:
        for mode in a.fit_modes:
            t = time.perf_counter()
            cfg = ModelConfig(kind=a.model, image_size=size, fit_mode=mode)
            det = Detector(cfg, TrainConfig(epochs=a.epochs)).fit(data, progress=False)
            train_s = time.perf_counter() - t
            images = good_imgs + [b for b, _, _ in painted]
            labels = np.array([False] * len(good_imgs) + [True] * len(painted))
            masks = [np.zeros(img.shape[:2], bool) for img in good_imgs] + [m for _, m, _ in painted]
            maps, scores = det.score(images)
            caught = float((scores[labels] >= det.image_threshold).mean())
            false_rej = float((scores[~labels] >= det.image_threshold).mean())
            views = det._fit(good_imgs[0])[1].views
            rows.append(
                f"| {what} | {a.model} | {size} | {mode} ({views} view{'s' if views > 1 else ''}) | "
                f"{100 * np.mean(areas):.3f}% ({np.mean(areas) * pixels:.0f} px) | "
                f"{metrics.roc_auc(labels, scores):.3f} | {metrics.pixel_auroc(masks, maps):.3f} | {caught:.2f} | "
                f"{false_rej:.2f} | {train_s:.0f} |"
            )
            print(rows[-1], flush=True)
    header = ("\n### Tiny defects " + time.strftime("%Y-%m-%d") + f" ({os.cpu_count()} cores)\n\n`python "
              + " ".join(sys.argv) + "`\n\n| data | model | working size | fit mode | mean defect area | image AUROC | "
              "pixel AUROC | caught at threshold | good rejected | train s |\n|---|---|---|---|---|---|---|---|---|---|\n")
    with OUT.open("a") as f:
        f.write(header + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
