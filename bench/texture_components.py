"""Which of the default model's two detectors finds the texture defects: image AUROC of
the autoencoder's evidence alone, the patch memory's distance alone, and their sum (what
the model scores), on one texture set of bench/textures.py.

    python bench/texture_components.py grass [--split quadrants] [--workdir /tmp/tx-quad]

Each part is the unsmoothed map divided by its own alarm level (as in
InspectionModule.raw_map), smoothed, and its maximum over the image taken, so the sum
column is the model's own image score up to calibration's shift and scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anomaly.config import ModelConfig, TrainConfig  # noqa: E402
from anomaly.detector import Detector  # noqa: E402
from anomaly.imageio import per_image, read_image  # noqa: E402
from anomaly.metrics import roc_auc  # noqa: E402
from anomaly.model import separable_blur  # noqa: E402
from anomaly.train import to_tensor  # noqa: E402
from textures import build  # noqa: E402


def part_scores(det: Detector, files: list[Path]) -> dict[str, np.ndarray]:
    m = det.module
    scale = m.residual_scale
    out: dict[str, list[float]] = {"autoencoder": [], "memory": [], "sum": []}
    for f in files:
        views, layout = det._fit(read_image(f))
        with torch.no_grad():
            evidence, distance = m.evidence_parts(to_tensor(views))
            e = separable_blur(evidence / scale[0], m.smooth_kernel)
            d = separable_blur(distance / scale[1], m.smooth_kernel)
        for name, t in (("autoencoder", e), ("memory", d), ("sum", e + d)):
            out[name].append(float(layout.content(per_image(t[:, 0].numpy(), [layout])[0]).max()))
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texture")
    p.add_argument("--split", choices=("rows", "quadrants"), default="quadrants")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tx-quad"))
    a = p.parse_args()
    data = build(a.texture, a.workdir / "data", split=a.split)
    t0 = time.perf_counter()
    det = Detector(ModelConfig(), TrainConfig(epochs=a.epochs)).fit(data, progress=False)
    if det.module.memory is None:
        sys.exit("the default model has no patch memory: nothing to compare")
    good = sorted((data / "test/good").glob("*.png"))
    bad = sorted((data / "test/synthetic").glob("*.png"))
    scores = part_scores(det, good + bad)
    labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
    print(f"{a.texture} ({a.split} split, trained in {time.perf_counter() - t0:.0f} s; "
          f"alarm levels: autoencoder {float(det.module.residual_scale[0]):.3g}, memory {float(det.module.residual_scale[1]):.3g})")
    for name, s in scores.items():
        print(f"  {name:12s} image AUROC {roc_auc(labels, s):.3f}   good crops' maxima: median {np.median(s[: len(good)]):.2f}, "
              f"max {s[: len(good)].max():.2f}")


if __name__ == "__main__":
    main()
