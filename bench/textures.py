"""Generalisation check on real texture photos: skimage's bundled brick, grass, gravel
(grayscale) and immunohistochemistry (colour stained tissue).

    python bench/textures.py [--epochs 40] [--textures brick,grass] [--defects independent|painted]
                             [--split rows|quadrants|quadrants-val] [--model-json '{"kind": "patch_memory"}']
                             [--train-json '{"head_epochs": 16}'] [--out F]

For each photo (512 x 512), builds an MVTec-style folder of 160 x 160 crops: training
crops from one part of the photo, test crops from another (never seen in training), half
of them with one defect and its exact mask. Trains the default model on it, evaluates the
exported ONNX file, and writes bench/results_textures.md.

Where the crops come from (`--split`):
- rows (default, the first check): training crops from the top 300 rows, test crops from
  the rows below 320. A photo is not uniform from top to bottom (the grass photo has
  clover in its lower part), so this also asks the model to accept normal texture it has
  not seen.
- quadrants: training crops from the top-left and bottom-right 256 x 256 quadrants, test
  crops from the other two, so both come from every height and side of the photo, as a
  line's training and test parts come from the same production.
- quadrants-val: training crops as in quadrants, 12 held-out good crops (`validation/good`)
  from the bottom-left quadrant, test crops from the top-right one. In the other splits
  the model holds out 15% of the training crops, which overlap the crops it trains on:
  their maps are calmer than a new part's (the memory has seen their pixels), which
  biases everything fitted on them (thresholds, the two detectors' weights, the edge
  calibration's damping). Here the held-out crops are as new to the model as test crops,
  as separate photos of parts are on a line.

Test defects (`--defects`):
- independent (default): bench/texture_defects.py, the kinds of MVTec AD's texture
  categories (hole, foreign contamination, thread, glue, cut, colour), written apart from
  the training generator and visible by construction.
- painted: the first version of this check, `anomaly.synthetic.defects` (the generator the
  segmentation head trains on), faint ones (mean change under VISIBLE gray levels)
  repainted. On stochastic textures many of these are no defect a person can see: a
  patch of grass pasted into grass is grass. Kept to reproduce the earlier rows.

The `residual only` columns score the same model without the head's map (the feature
residual alone), which has not learnt any defect's look.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results_textures.md"
CROP = 160
N_VALIDATION = 12  # --split quadrants-val: held-out crops (15% of 80 is what the other splits hold out)
VISIBLE = 20.0  # mean absolute gray-level change inside the mask (of 255) for a test defect


FOREIGN = {"brick": "camera", "grass": "camera", "gravel": "camera", "immunohistochemistry": "coffee"}


def _photo(name: str) -> np.ndarray:
    """A bundled skimage photo as HxWx3 float RGB in [0, 1] (gray photos repeated)."""
    import skimage.data

    photo = getattr(skimage.data, name)()
    if photo.ndim == 2:
        photo = np.repeat(photo[:, :, None], 3, axis=2)
    return photo[:, :, :3].astype(np.float32) / 255.0


def build(texture: str, root: Path, seed: int = 0, n_train: int = 80, n_test: int = 40,
          defects: str = "independent", split: str = "rows") -> Path:
    """MVTec-style folder for one skimage texture; deterministic for a seed and defect set."""
    from anomaly.synthetic.defects import random_defect

    import texture_defects

    photo = _photo(texture)
    is_gray = bool(np.all(photo[:, :, 0] == photo[:, :, 1]))
    foreign_photo = _photo(FOREIGN[texture])
    rng = np.random.default_rng(seed)
    name = defects if split == "rows" else f"{defects}-{split}"
    name += (f"-train{n_train}" if n_train != 80 else "") + (f"-test{n_test}" if n_test != 40 else "")
    out = root / name / texture  # one folder per set: a larger set never mixes with a smaller one's files
    for sub in ("train/good", "test/good", "test/synthetic", "ground_truth/synthetic"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    def crop(source: np.ndarray, top_lo: int, top_hi: int, left_lo: int = 0, left_hi: int | None = None) -> np.ndarray:
        y = int(rng.integers(top_lo, top_hi - CROP + 1))
        x = int(rng.integers(left_lo, (left_hi or source.shape[1]) - CROP + 1))
        return source[y : y + CROP, x : x + CROP]

    h, w = photo.shape[:2]
    validation_regions = []
    if split == "rows":
        train_regions, test_regions = [(0, 300, 0, w)], [(320, h, 0, w)]
    elif split == "quadrants":  # (top_lo, top_hi, left_lo, left_hi)
        train_regions = [(0, h // 2, 0, w // 2), (h // 2, h, w // 2, w)]
        test_regions = [(0, h // 2, w // 2, w), (h // 2, h, 0, w // 2)]
    else:  # quadrants-val: held-out good crops from a quadrant of their own
        train_regions = [(0, h // 2, 0, w // 2), (h // 2, h, w // 2, w)]
        validation_regions = [(h // 2, h, 0, w // 2)]
        test_regions = [(0, h // 2, w // 2, w)]

    def save(path: Path, rgb: np.ndarray) -> None:
        u8 = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
        cv2.imwrite(str(path), cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY) if is_gray else cv2.cvtColor(u8, cv2.COLOR_RGB2BGR))

    for i in range(n_train):
        save(out / "train/good" / f"{i:03d}.png", crop(photo, *train_regions[i % len(train_regions)]))
    if validation_regions:
        (out / "validation/good").mkdir(parents=True, exist_ok=True)
        for i in range(N_VALIDATION):  # after the training crops: those stay the same crops
            save(out / "validation/good" / f"{i:03d}.png", crop(photo, *validation_regions[0]))
    for i in range(n_test):
        part = crop(photo, *test_regions[(i // 2) % len(test_regions)])
        if i % 2 == 0:
            save(out / "test/good" / f"{i:03d}.png", part)
            continue
        if defects == "independent":
            kind = defect_kind(i, is_gray)
            painted, mask = texture_defects.paint(part, rng, kind, crop(foreign_photo, 0, foreign_photo.shape[0]))
        else:  # the first check: the training generator, faint ones repainted
            for _ in range(20):
                painted, mask, _ = random_defect(part, rng, scale_range=(0.02, 0.2))
                gray = cv2.cvtColor((painted * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
                before = cv2.cvtColor((part * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
                if mask.any() and np.abs(gray - before)[mask].mean() >= VISIBLE:
                    break
        save(out / "test/synthetic" / f"{i:03d}.png", painted)
        cv2.imwrite(str(out / "ground_truth/synthetic" / f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)
    return out


def defect_kind(index: int, is_gray: bool) -> str:
    """The independent defect kind painted on test crop `index` (an odd one): kinds rotate
    over the defective crops; the colour kind only on colour photos."""
    from texture_defects import KINDS

    kinds = [k for k in KINDS if not (is_gray and k == "color")]
    return kinds[(index // 2) % len(kinds)]


class ResidualOnly:
    """The trained model's feature residual alone (no head), calibrated the same way
    (map divided by its spread on good pixels): what the model finds without having
    learnt any defect's look."""

    def __init__(self, detector) -> None:
        from anomaly.training.model import gaussian_kernel1d

        self.det = detector
        self.kernel = gaussian_kernel1d(detector.model_config.smoothing_sigma)
        self.image_threshold, self.pixel_threshold = 1.0, 0.5

    def score(self, images):
        import torch

        from anomaly.inspection.imageio import per_image
        from anomaly.training.model import separable_blur
        from anomaly.training.fit import to_tensor

        maps, scores = [], []
        for img in images:
            views, layout = self.det._fit(img)
            with torch.no_grad():
                r, _ = self.det.module.residual_components(to_tensor(views))
            content = layout.content(per_image(separable_blur(r, self.kernel)[:, 0].numpy(), [layout])[0])
            scores.append(float(content.max()))
            maps.append(layout.original(content))
        return maps, np.array(scores)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--textures", default="brick,grass,gravel,immunohistochemistry")
    p.add_argument("--defects", choices=("independent", "painted"), default="independent",
                   help="test defects: bench/texture_defects.py (default), or the training generator (the first check)")
    p.add_argument("--split", choices=("rows", "quadrants", "quadrants-val"), default="rows",
                   help="where training and test crops come from (see above; default rows, the first check)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0,
                   help="training seed (augmented copies, memory coreset, weights); the data stay the same")
    p.add_argument("--test-pairs", type=int, default=20,
                   help="good and defective test crops, each (default 20; the first 20 pairs are the same for any count)")
    p.add_argument("--model-json", default="", help="extra ModelConfig fields as JSON")
    p.add_argument("--train-json", default="", help="extra TrainConfig fields as JSON")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-textures"))
    p.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT.relative_to(ROOT)})")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()

    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.training.export import export_onnx
    from anomaly.inspection.inspector import Inspector

    extra = json.loads(a.model_json) if a.model_json else {}
    train_extra = json.loads(a.train_json) if a.train_json else {}
    rows = []
    for texture in a.textures.split(","):
        data = build(texture, a.workdir / "data", defects=a.defects, split=a.split, n_test=2 * a.test_pairs)
        t0 = time.perf_counter()
        det = Detector(ModelConfig(**extra), TrainConfig(epochs=a.epochs, seed=a.seed, **train_extra)).fit(data, progress=not a.quiet)
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
        f"- command: `python bench/{Path(__file__).name} {shlex.join(sys.argv[1:])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {platform.machine()}, 2 cores",
        f"- model: default settings{(' + ' + json.dumps(extra)) if extra else ''}"
        f"{(' + training ' + json.dumps(train_extra)) if train_extra else ''}, {a.epochs} epochs, seed {a.seed}; "
        f"test defects: {a.defects}; "
        f"data: skimage.data textures, {CROP}px crops, 80 train / {a.test_pairs} good + {a.test_pairs} defective test crops; split: "
        + {"rows": "training crops from rows 0-300, test crops from rows 320-512",
           "quadrants": "training crops from the top-left and bottom-right quadrants, test crops from the other two",
           "quadrants-val": f"training crops from the top-left and bottom-right quadrants, {N_VALIDATION} held-out "
                            "(validation/good) crops from the bottom-left one, test crops from the top-right one"}[a.split],
        ("- caveat: test defects come from anomaly.synthetic.defects, the generator the segmentation head trains on "
         "(other images, same kinds); the residual-only columns have learnt no defect look."
         if a.defects == "painted" else
         "- test defects: bench/texture_defects.py (hole, contamination, thread, glue, cut, colour on colour "
         "photos), apart from the training generator"), "",
        "| texture | image AUROC | pixel AUROC | AUPRO | residual only: image AUROC | pixel AUROC | AUPRO | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['texture']} | {cells(r['full'])} | {cells(r['residual_only'])} | {r['train_s']} |" for r in rows]
    a.out.write_text("\n".join(lines) + "\n")
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
