"""Does scoring a patch by its k nearest normal patches (k > 1) beat the nearest one?

    python bench/memory_knn.py DATA [DATA ...] [--ks 1,3,5] [--out bench/results_memory_knn.md]

A contamination blob that looks locally like one rare normal patch (a clover leaf in
grass, a smooth stone face in gravel) has one close neighbour in the memory but few; a
normal patch in a common texture has many. The mean distance to the k nearest is a
k-nearest-neighbour density estimate that tells these apart, where the nearest alone
does not. Each DATA folder gets one default model; then the memory's score is swapped
for the mean over the k nearest of the candidates its block search measures (one per
search block, 8 by default: for k up to 8 an approximation of the k nearest), the model
is re-calibrated on the same held-out images (everything downstream of the memory is
fitted on its maps), and evaluated with the torch module. k = 1 is the default model.
The swap is made here, not in anomaly/: this is an experiment.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def knn_forward(k: int):
    """PatchMemory.forward with the mean distance to the k nearest block candidates."""
    import torch

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        squared = self.candidate_distances(f)  # (N, g, g, blocks)
        nearest = squared.topk(min(k, squared.shape[3]), dim=3, largest=False).values.clamp_min(0).sqrt()
        return nearest.mean(dim=3).unsqueeze(1)

    return forward


def sweep(data: Path, ks: list[int]) -> tuple[list[dict], float]:
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.evaluation.datasets import find_dataset, split_holdout
    from anomaly.training.detector import Detector
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.inspection.imageio import read_image
    from anomaly.training.networks import PatchMemory

    original = PatchMemory.forward
    t0 = time.perf_counter()
    det = Detector(ModelConfig(), TrainConfig()).fit(data, progress=False)
    train_s = time.perf_counter() - t0
    dataset, tc = find_dataset(data), det.train_config
    hold = dataset.validation or split_holdout(dataset.train, tc.holdout_fraction, tc.min_holdout, tc.seed)[1]
    prepared = [det._fit(read_image(p)) for p in hold]
    views = [v for vs, _ in prepared for v in vs]
    layouts = [layout for _, layout in prepared]
    rows = []
    try:
        for k in ks:
            PatchMemory.forward = original if k == 1 else knn_forward(k)
            det.calibrate(views, layouts)
            r = evaluate(det, data, progress=False)
            rows.append({"k": k, **{m: r[m] for m in ("image_auroc", "pixel_auroc", "pixel_aupro")}})
            print(f"  {data.name} k {k}: image AUROC {r['image_auroc']:.3f}, pixel AUROC {r['pixel_auroc']:.3f}, "
                  f"AUPRO {r['pixel_aupro']:.3f}", flush=True)
    finally:
        PatchMemory.forward = original
    return rows, train_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, nargs="+", help="MVTec-style folders (e.g. texture folders of bench/textures.py)")
    p.add_argument("--ks", default="1,3,5")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results_memory_knn.md")
    args = p.parse_args()
    ks = [int(v) for v in args.ks.split(",")]
    lines = ["# Memory score: nearest vs mean of k nearest (bench/memory_knn.py)", "",
             f"- command: `python bench/memory_knn.py {' '.join(map(str, args.data))} --ks {args.ks}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; machine: {platform.machine()}, "
             f"{os.cpu_count()} cores; default model, seed 0, evaluated with the torch module", "",
             "| data | k | image AUROC | pixel AUROC | AUPRO |", "|---|---|---|---|---|"]
    for data in args.data:
        rows, train_s = sweep(data, ks)
        lines += [f"| {data.name} | {r['k']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['pixel_aupro']:.3f} |"
                  for r in rows]
        print(f"  {data.name}: trained in {train_s:.0f} s", flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
