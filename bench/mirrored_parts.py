"""Does the model notice a mirrored part? Horizontal flips as a training augmentation.

    python bench/mirrored_parts.py [--mark engraved|printed] [--epochs 80] [--seed 0] [--augment-json '{"hflip": true}'] [--name NAME]

Many parts are chiral: a printed or engraved mark, a screw thread, the lobes of a nut. A
part put in upside down, or a mark printed reversed, is then a mirror image of a good one
(MVTec AD's metal_nut has a whole defect class of flipped nuts). A model that saw
mirrored training images learns that mirror images are normal.

Builds an MVTec-style folder of demo washers (anomaly.synthetic.demo, 256 px, gray camera) with an
"F" on the ring, above the hole, engraved (darker, with a lit lip on its lower right: the
light comes from the top left) or printed (flat ink, no relief): train/good (60),
test/good (20), and two defect classes of 20 each:
- mirrored: the mark reversed, in the same place and under the same light (the mask
  covers the pixels where the two marks differ);
- ordinary: the demo set's own defects (scratch, crack, dent, stain, missing), as a
  control that sensitivity to everyday defects is kept.
Trains the default model with the given augmentation settings, evaluates the exported
ONNX file and appends a row to bench/results_mirrored.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results_mirrored.md"
SIZE = 256
COUNTS = {"train": 60, "test_good": 20, "test_defect": 20}


def mark_mask(size: int, mirrored: bool) -> np.ndarray:
    """Soft mask (0..1) of an "F" on the washer's ring above the hole, read the right way
    round or mirrored about its own vertical axis (so it stays in place)."""
    big = np.zeros((4 * size, 4 * size), np.uint8)  # drawn at 4x, then shrunk: anti-aliased strokes
    scale = size / 256 * 1.5
    (w, h), _ = cv2.getTextSize("F", cv2.FONT_HERSHEY_SIMPLEX, scale * 4, 1)
    centre_x, centre_y = 2 * size, int(4 * size * (0.5 - 0.265))
    cv2.putText(big, "F", (centre_x - w // 2, centre_y + h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale * 4, 255,
                thickness=int(round(7 * size / 256)), lineType=cv2.LINE_AA)
    if mirrored:
        big = big[:, ::-1]
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def engrave(image: np.ndarray, mark: np.ndarray) -> np.ndarray:
    """Darken the mark into the steel, with a bright lower-right lip (light from the top left)."""
    lip = np.roll(mark, (1, 1), axis=(0, 1)) - mark
    return np.clip(image * (1.0 - 0.35 * mark[:, :, None]) + 0.12 * np.clip(lip, 0, 1)[:, :, None], 0, 1)


def imprint(image: np.ndarray, mark: np.ndarray) -> np.ndarray:
    """Flat dark ink: nothing about it depends on the light."""
    return image * (1.0 - 0.6 * mark[:, :, None])


MARKS = {"engraved": engrave, "printed": imprint}


def build(root: Path, mark: str = "engraved", seed: int = 0) -> Path:
    from anomaly.synthetic import demo as synth
    from anomaly.inspection.imageio import save_image

    spec = synth._CATEGORY_SPECS["washer"]
    good_mark, reversed_mark = mark_mask(SIZE, False), mark_mask(SIZE, True)
    differs = np.abs(good_mark - reversed_mark) > 0.25
    apply_mark = MARKS[mark]
    data = root / f"{mark}_washer"
    for sub in ("train/good", "test/good", "test/mirrored", "test/ordinary", "ground_truth/mirrored",
                "ground_truth/ordinary"):
        (data / sub).mkdir(parents=True, exist_ok=True)

    def rng(split: int, i: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([seed, 77, split, i]))

    def shot(image: np.ndarray, r: np.random.Generator) -> np.ndarray:
        return synth._sensor(synth._to_gray(image), r, spec.noise)

    for split, folder, n in ((0, "train/good", COUNTS["train"]), (1, "test/good", COUNTS["test_good"])):
        for i in range(n):
            r = rng(split, i)
            save_image(data / folder / f"{i:03d}.png", shot(apply_mark(spec.render(r, SIZE).image, good_mark), r))
    for i in range(COUNTS["test_defect"]):
        r = rng(2, i)
        save_image(data / "test/mirrored" / f"{i:03d}.png", shot(apply_mark(spec.render(r, SIZE).image, reversed_mark), r))
        save_image(data / "ground_truth/mirrored" / f"{i:03d}_mask.png", differs.astype(np.uint8) * 255)
        r = rng(3, i)
        render = spec.render(r, SIZE)
        render = dataclasses.replace(render, image=apply_mark(render.image, good_mark).astype(np.float32))
        kind = spec.defect_kinds[i % len(spec.defect_kinds)]
        image, mask = synth._paint_visible(spec, kind, render, r)
        save_image(data / "test/ordinary" / f"{i:03d}.png", synth._sensor(image, r, spec.noise))  # already gray
        save_image(data / "ground_truth/ordinary" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return data


def main() -> None:
    from anomaly.config import AugmentConfig, ModelConfig, TrainConfig
    from anomaly.training.detector import Detector
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.training.export import export_onnx
    from anomaly.inspection.inspector import Inspector

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mark", choices=tuple(MARKS), default="engraved")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--seed", type=int, default=0, help="training seed (the images stay the same)")
    p.add_argument("--augment-json", default="", help="AugmentConfig fields as JSON (default: the project's default)")
    p.add_argument("--name", default="")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-mirrored"))
    a = p.parse_args()
    data = build(a.workdir, a.mark)
    augment = AugmentConfig(**json.loads(a.augment_json or "{}"))
    t = time.perf_counter()
    det = Detector(ModelConfig(), TrainConfig(epochs=a.epochs, seed=a.seed, augment=augment)).fit(data, progress=False)
    seconds = time.perf_counter() - t
    out = a.workdir / (a.name or "model")
    det.save(out)
    result = evaluate(Inspector(export_onnx(det, out / "model.onnx")), data, progress=False)
    per = result["per_defect"]
    row = (f"| {a.name or '-'} | {a.mark} | hflip {augment.hflip}, vflip {augment.vflip}, seed {a.seed} | "
           + " | ".join(f"{per[k]['image_auroc']:.3f} / {per[k]['pixel_auroc']:.3f} / "
                        f"{per[k]['confusion']['tp']}/{per[k]['confusion']['tp'] + per[k]['confusion']['fn']}"
                        for k in ("mirrored", "ordinary"))
           + f" | {result['confusion']['fp']}/{result['confusion']['fp'] + result['confusion']['tn']} "
           f"| {seconds:.0f} ({det.summary['epochs_run']}) |")
    command = "python " + " ".join(sys.argv)
    head = (f"\n### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}: `{command}`\n\n"
            "| name | mark | augmentation | mirrored: image AUROC / pixel AUROC / caught | ordinary: same | good rejected "
            "| train s (epochs) |\n|---|---|---|---|---|---|---|\n")
    print(head + row)
    with OUT.open("a") as f:
        f.write(head + row + "\n")


if __name__ == "__main__":
    main()
