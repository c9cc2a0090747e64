"""What a few labelled real defects buy: sharper thresholds and a fine-tuned head.

    python bench/few_defects.py [--per-type 2] [--seed 0]

Splits the bottle test set: `--per-type` defect images of each type (chosen with the
seed) are the "shots" a quality engineer would label; everything else (all good test
images and the remaining defects) is the evaluation set, never used for training or
thresholds. Then, on the same evaluation set:

1. the default model (`anomaly train DATA --defects SHOTS`: the shots only give
   thresholds) at its calibrated threshold and at the image threshold that is
   F1-optimal on the shots plus the held-out good training images;
2. the same with the segmentation head also fine-tuned on the shots
   (`anomaly train DATA --defects SHOTS --fine-tune-head`), at both thresholds.

Appends to bench/results_few_defects.md.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets" / "mvtec_bottle"
OUT = ROOT / "bench" / "results_few_defects.md"


def split(data: Path, work: Path, per_type: int, seed: int) -> tuple[Path, Path, int]:
    """(shots folder, evaluation folder, number of shots), both MVTec-style."""
    from anomaly.evaluation.datasets import find_test_set

    rng = np.random.default_rng(seed)
    shots, rest = work / "shots", work / "rest"
    shutil.rmtree(work, ignore_errors=True)
    samples = find_test_set(data)
    chosen: set[Path] = set()
    for defect in sorted({s.defect for s in samples if s.is_defective}):
        of_type = [s for s in samples if s.defect == defect]
        for k in rng.choice(len(of_type), size=min(per_type, len(of_type)), replace=False):
            chosen.add(of_type[int(k)].path)
    for s in samples:
        dest = shots if s.path in chosen else rest
        (dest / "test" / s.defect).mkdir(parents=True, exist_ok=True)
        (dest / "test" / s.defect / s.path.name).symlink_to(s.path.resolve())
        if s.mask_path is not None:
            (dest / "ground_truth" / s.defect).mkdir(parents=True, exist_ok=True)
            (dest / "ground_truth" / s.defect / s.mask_path.name).symlink_to(s.mask_path.resolve())
    return shots, rest, len(chosen)


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, int, int]:
    """Image F1, missed defects, rejected good parts at a threshold."""
    pred = scores >= threshold
    tp, fp, fn = int((pred & labels).sum()), int((pred & ~labels).sum()), int((~pred & labels).sum())
    return (2 * tp / max(2 * tp + fp + fn, 1)), fn, fp


def measure(det, rest: Path, threshold: float) -> dict:
    from anomaly.evaluation.datasets import find_test_set
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.inspection.imageio import read_image

    metrics = evaluate(det, rest, progress=False)
    samples = find_test_set(rest)
    _, scores = det.score([read_image(s.path) for s in samples])
    labels = np.array([s.is_defective for s in samples])
    f1, missed, rejected = f1_at(scores, labels, threshold)
    return {"image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"],
            "pixel_aupro": metrics["pixel_aupro"], "f1": f1, "missed": missed, "rejected": rejected,
            "threshold": threshold, "defects": int(labels.sum()), "good": int((~labels).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--per-type", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-few-defects"))
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()

    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector

    shots, rest, n_shots = split(a.data, a.workdir / "split", a.per_type, a.seed)
    rows = []
    for fine_tune in (False, True):
        t0 = time.perf_counter()
        # as `anomaly train DATA --defects SHOTS [--fine-tune-head]`
        det = Detector(ModelConfig(), TrainConfig(epochs=a.epochs, seed=a.seed)).fit(
            a.data, progress=not a.quiet, defects=shots, fine_tune_head=fine_tune)
        train_s = time.perf_counter() - t0
        name = "head fine-tuned on the shots" if fine_tune else "default (shots for thresholds only)"
        rows.append((name, "calibrated", measure(det, rest, det.image_threshold), train_s))
        rows.append((name, "F1-optimal on shots + held-out good", measure(det, rest, det.calibration.image_threshold_f1), train_s))
        print(rows[-2], rows[-1], flush=True)

    lines = [
        f"\n### {time.strftime('%Y-%m-%d %H:%M')}, `python bench/few_defects.py {shlex.join(sys.argv[1:])}`\n",
        f"{n_shots} labelled defects ({a.per_type} per type, seed {a.seed}) for fine-tuning / thresholds; "
        f"evaluation on the other {rows[0][2]['defects']} defects and all {rows[0][2]['good']} good test images.\n",
        "| model | image threshold | image AUROC | pixel AUROC | AUPRO | image F1 | missed | good rejected | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, thr, m, train_s in rows:
        lines.append(f"| {name} | {thr} ({m['threshold']:.3f}) | {m['image_auroc']:.4f} | {m['pixel_auroc']:.4f} | "
                     f"{m['pixel_aupro']:.4f} | {m['f1']:.3f} | {m['missed']} | {m['rejected']} | {train_s:.0f} |")
    with OUT.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
