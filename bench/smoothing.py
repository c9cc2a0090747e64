"""How the heatmap's Gaussian smoothing changes accuracy: one trained default model per
data set, re-calibrated and evaluated at several smoothing widths.

    python bench/smoothing.py --textures grass,gravel,immunohistochemistry [--split quadrants-val]
    python bench/smoothing.py --folder ../shared/datasets/mvtec_bottle
                              [--sigmas 1,2,4,8] [--out bench/results_smoothing.md]

Smoothing is the last linear step before calibration (anomaly.training.model.InspectionModule
.raw_map), so the network and memory need not be retrained for each width: only the
kernel changes, and everything fitted on smoothed held-out maps (the two detectors'
alarm levels, the edge calibration, the thresholds) is fitted again by
Detector.calibrate on the same held-out images. Scores come from the torch module
(the exported graph is the same module; the parity test covers that).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def sweep(data: Path, sigmas: list[float], epochs: int) -> tuple[list[dict], float]:
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.evaluation.datasets import find_dataset, split_holdout
    from anomaly.training.detector import Detector
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.inspection.imageio import read_image
    from anomaly.training.model import gaussian_kernel1d

    t0 = time.perf_counter()
    det = Detector(ModelConfig(), TrainConfig(epochs=epochs)).fit(data, progress=False)
    train_s = time.perf_counter() - t0
    dataset, tc = find_dataset(data), det.train_config
    hold = dataset.validation or split_holdout(dataset.train, tc.holdout_fraction, tc.min_holdout, tc.seed)[1]
    prepared = [det._fit(read_image(p)) for p in hold]  # the held-out images fit used
    views = [v for vs, _ in prepared for v in vs]
    layouts = [layout for _, layout in prepared]
    rows = []
    for sigma in sigmas:
        det.module.smooth_kernel = gaussian_kernel1d(sigma)
        det.model_config.smoothing_sigma = sigma
        det.calibrate(views, layouts)
        r = evaluate(det, data, progress=False)
        rows.append({"sigma": sigma, **{k: r[k] for k in ("image_auroc", "pixel_auroc", "pixel_aupro")}})
        print(f"  {data.name} sigma {sigma:g}: image AUROC {r['image_auroc']:.3f}, pixel AUROC {r['pixel_auroc']:.3f}, "
              f"AUPRO {r['pixel_aupro']:.3f}", flush=True)
    return rows, train_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--textures", default="", help="texture photos of bench/textures.py")
    p.add_argument("--split", default="quadrants-val", choices=("rows", "quadrants", "quadrants-val"))
    p.add_argument("--test-pairs", type=int, default=60)
    p.add_argument("--folder", type=Path, action="append", default=[], help="an MVTec-style category folder")
    p.add_argument("--sigmas", default="1,2,4,8")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-smoothing"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results_smoothing.md")
    a = p.parse_args()
    sigmas = [float(s) for s in a.sigmas.split(",")]
    sets: list[Path] = list(a.folder)
    if a.textures:
        from textures import build

        sets += [build(t, a.workdir / "data", split=a.split, n_test=2 * a.test_pairs) for t in a.textures.split(",")]
    lines = ["# Heatmap smoothing width (default model re-calibrated per width)", "",
             f"- command: `python bench/smoothing.py {shlex.join(sys.argv[1:])}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {platform.machine()}, {os.cpu_count()} cores",
             f"- default model, {a.epochs} epochs; sigma in pixels of the working size (default: 2 for the feature models, 4 before)", "",
             "| data | sigma | image AUROC | pixel AUROC | AUPRO |", "|---|---|---|---|---|"]
    for data in sets:
        rows, train_s = sweep(data, sigmas, a.epochs)
        print(f"{data.name}: trained in {train_s:.0f} s", flush=True)
        lines += [f"| {data.name} | {r['sigma']:g} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['pixel_aupro']:.3f} |"
                  for r in rows]
        a.out.write_text("\n".join(lines) + "\n")  # after each set, so a cut-off run keeps what it measured
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
