"""Generalisation check on real texture photos: skimage's bundled brick, grass and gravel.

    python bench/textures.py [--epochs 40] [--textures brick,grass,gravel] [--model-json '{"kind": "patch_memory"}' --out F]

For each 512x512 grayscale photo, builds an MVTec-style folder: training crops
(160x160) from the top 300 rows, test crops from the bottom 192 rows (never seen in
training), half of them with one defect painted by `anomaly.defects` with its exact
mask (faint ones, mean change under VISIBLE gray levels, are repainted: colour
defects vanish in gray). Trains the default model on it, evaluates the exported ONNX file, and writes
bench/results_textures.md. Grayscale, textures (not objects), defects from tiny to large.

Caveat, stated in the results: the test defects come from the same generator the
default model trains its segmentation head on, so the head has seen their kind (not
these images). The `residual only` columns score the same model without the head's
map (the feature residual alone), which has not learnt any defect's look.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results_textures.md"
CROP = 160
VISIBLE = 20.0  # mean absolute gray-level change inside the mask (of 255) for a test defect


def build(texture: str, root: Path, seed: int = 0, n_train: int = 80, n_test: int = 40) -> Path:
    """MVTec-style folder for one skimage texture; deterministic for a seed."""
    import skimage.data

    from anomaly.defects import random_defect

    photo = getattr(skimage.data, texture)()
    rng = np.random.default_rng(seed)
    out = root / texture
    for sub in ("train/good", "test/good", "test/synthetic", "ground_truth/synthetic"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    def crop(top_lo: int, top_hi: int) -> np.ndarray:
        y = int(rng.integers(top_lo, top_hi - CROP + 1))
        x = int(rng.integers(0, photo.shape[1] - CROP + 1))
        return photo[y : y + CROP, x : x + CROP]

    for i in range(n_train):
        cv2.imwrite(str(out / "train/good" / f"{i:03d}.png"), crop(0, 300))
    for i in range(n_test):
        part = crop(320, photo.shape[0])
        if i % 2 == 0:
            cv2.imwrite(str(out / "test/good" / f"{i:03d}.png"), part)
            continue
        rgb = np.repeat(part[:, :, None], 3, axis=2).astype(np.float32) / 255.0
        for _ in range(20):  # a defect a person can see in the gray image: repaint faint ones
            painted, mask, _ = random_defect(rgb, rng, scale_range=(0.02, 0.2))
            gray = cv2.cvtColor((painted * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
            if mask.any() and np.abs(gray[mask].astype(np.float32) - part[mask]).mean() >= VISIBLE:
                break
        cv2.imwrite(str(out / "test/synthetic" / f"{i:03d}.png"), gray)
        cv2.imwrite(str(out / "ground_truth/synthetic" / f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)
    return out


class ResidualOnly:
    """The trained model's feature residual alone (no head), calibrated the same way
    (map divided by its spread on good pixels): what the model finds without having
    learnt any defect's look."""

    def __init__(self, detector) -> None:
        from anomaly.model import gaussian_kernel1d

        self.det = detector
        self.kernel = gaussian_kernel1d(detector.model_config.smoothing_sigma)
        self.image_threshold, self.pixel_threshold = 1.0, 0.5

    def score(self, images):
        import torch

        from anomaly.imageio import crop_to_content, map_to_original
        from anomaly.model import separable_blur
        from anomaly.train import to_tensor

        maps, scores = [], []
        for img in images:
            fitted, pl = self.det._fit(img)
            with torch.no_grad():
                r, _ = self.det.module.residual_components(to_tensor([fitted]))
            mp = separable_blur(r, self.kernel)[0, 0].numpy()
            scores.append(float(crop_to_content(mp, pl).max()))
            maps.append(map_to_original(mp, pl))
        return maps, np.array(scores)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--textures", default="brick,grass,gravel")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--model-json", default="", help="extra ModelConfig fields as JSON")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-textures"))
    p.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT.relative_to(ROOT)})")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()

    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.detector import Detector
    from anomaly.evaluate import evaluate
    from anomaly.export import export_onnx
    from anomaly.runtime import Inspector

    extra = json.loads(a.model_json) if a.model_json else {}
    rows = []
    for texture in a.textures.split(","):
        data = build(texture, a.workdir / "data")
        t0 = time.perf_counter()
        det = Detector(ModelConfig(**extra), TrainConfig(epochs=a.epochs)).fit(data, progress=not a.quiet)
        train_s = time.perf_counter() - t0
        onnx_path = export_onnx(det, a.workdir / f"{texture}.onnx")
        full = evaluate(Inspector(onnx_path), data, progress=False)
        res = evaluate(ResidualOnly(det), data, progress=False) if det.module.head is not None else None
        row = {"texture": texture, "train_s": round(train_s), "full": full, "residual_only": res}
        rows.append(row)
        print(texture, {k: round(full[k], 3) for k in ("image_auroc", "pixel_auroc", "pixel_aupro")},
              "residual only:", res and {k: round(res[k], 3) for k in ("image_auroc", "pixel_auroc", "pixel_aupro")},
              flush=True)

    def cells(r):
        return " | ".join(f"{r[k]:.3f}" for k in ("image_auroc", "pixel_auroc", "pixel_aupro")) if r else "- | - | -"

    lines = [
        "# Texture photos with synthetic defects (generalisation check)", "",
        f"- command: `python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {platform.machine()}, 2 cores",
        f"- model: default settings{(' + ' + json.dumps(extra)) if extra else ''}, {a.epochs} epochs; "
        f"data: skimage.data textures, {CROP}px crops, 80 train / 20 good + 20 defective test crops",
        "- caveat: test defects come from anomaly.defects, the generator the segmentation head trains on "
        "(other images, same kinds); the residual-only columns have learnt no defect look.", "",
        "| texture | image AUROC | pixel AUROC | AUPRO | residual only: image AUROC | pixel AUROC | AUPRO | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['texture']} | {cells(r['full'])} | {cells(r['residual_only'])} | {r['train_s']} |" for r in rows]
    a.out.write_text("\n".join(lines) + "\n")
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
