"""Which of the default model's detectors finds the texture defects: image AUROC of
the autoencoder's evidence alone, the patch memory's distance alone, and their sum (what
the model scores), on one texture set of bench/textures.py; also the evidence's two
factors, the feature residual r and the segmentation head's defect probability p
(the evidence is r * (1 + p)), each alone, and per defect kind.

    python bench/texture_components.py grass [--split quadrants-val --test-pairs 60] [--workdir /tmp/tx-quad]
    python bench/texture_components.py ../shared/datasets/mvtec_bottle --model /tmp/bs/default-streamed

Each part is the unsmoothed map divided by its own alarm level (as in
InspectionModule.raw_map), smoothed, and its maximum over the image taken, so the sum
column is the model's own image score up to calibration's shift and scale. The residual
and the head's probability are smoothed and maximised as they are (only their ranking
matters for AUROC).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anomaly.config import ModelConfig, TrainConfig  # noqa: E402
from anomaly.training.detector import Detector  # noqa: E402
from anomaly.inspection.imageio import per_image, read_image  # noqa: E402
from anomaly.evaluation.metrics import roc_auc  # noqa: E402
from anomaly.training.model import separable_blur  # noqa: E402
from anomaly.training.fit import to_tensor  # noqa: E402
from textures import build  # noqa: E402


def part_scores(det: Detector, files: list[Path]) -> dict[str, np.ndarray]:
    m = det.module
    scale = m.residual_scale
    out: dict[str, list[float]] = {"residual r": [], "head p": [], "autoencoder": [], "memory": [], "sum": []}
    for f in files:
        views, layout = det._fit(read_image(f))
        with torch.no_grad():
            x = to_tensor(views)
            r, p, distance = m.feature_components(x)
            e = separable_blur(m.evidence(r, p) / scale[0], m.smooth_kernel)
            d = separable_blur(distance / scale[1], m.smooth_kernel)
            parts = [("residual r", separable_blur(r, m.smooth_kernel)), ("head p", separable_blur(p, m.smooth_kernel)),
                     ("autoencoder", e), ("memory", d), ("sum", e + d)]
        for name, t in parts:
            out[name].append(float(layout.content(per_image(t[:, 0].numpy(), [layout])[0]).max()))
    return {k: np.asarray(v) for k, v in out.items()}


def defect_kinds(data: Path, bad: list[Path]) -> list[str]:
    """Each defective crop's kind, from its index as bench/textures.py painted it."""
    from textures import defect_kind

    first = read_image(bad[0])
    is_gray = bool(np.all(first[:, :, 0] == first[:, :, 1]))
    return [defect_kind(int(f.stem), is_gray) for f in bad]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texture", help="a texture of bench/textures.py, or an MVTec-style folder with --model")
    p.add_argument("--model", type=Path, help="score this trained model folder on the folder given as texture "
                   "(e.g. a bench/bottle.py model on ../shared/datasets/mvtec_bottle) instead of training")
    p.add_argument("--split", choices=("rows", "quadrants", "quadrants-val"), default="quadrants")
    p.add_argument("--test-pairs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tx-quad"))
    p.add_argument("--model-json", default="", help="extra ModelConfig fields as JSON")
    a = p.parse_args()
    t0 = time.perf_counter()
    if a.model:
        data = Path(a.texture)
        det = Detector.load(a.model)
        what = f"{data} with {a.model}"
    else:
        data = build(a.texture, a.workdir / "data", split=a.split, n_test=2 * a.test_pairs)
        det = Detector(ModelConfig(**(json.loads(a.model_json) if a.model_json else {})),
                       TrainConfig(epochs=a.epochs)).fit(data, progress=False)
        what = f"{a.texture} ({a.split} split, trained in {time.perf_counter() - t0:.0f} s)"
    if det.module.memory is None:
        sys.exit("the default model has no patch memory: nothing to compare")
    good = sorted((data / "test/good").glob("*.png"))
    bad = sorted(f for d in sorted((data / "test").iterdir()) if d.is_dir() and d.name != "good" for f in d.glob("*.png"))
    scores = part_scores(det, good + bad)
    labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
    print(f"{what}; head's final loss {det.summary.get('head_final_loss')}; alarm levels: "
          f"autoencoder {float(det.module.residual_scale[0]):.3g}, memory {float(det.module.residual_scale[1]):.3g}")
    kinds = defect_kinds(data, bad) if not a.model else [f.parent.name for f in bad]
    print(f"  {'part':12s} {'image AUROC':>11s}  {'good median':>11s}  {'bad median':>10s}  "
          + "  ".join(f"{k:>13s}" for k in sorted(set(kinds))))
    for name, s in scores.items():
        per_kind = [roc_auc(np.r_[np.zeros(len(good)), np.ones(kinds.count(k))],
                            np.r_[s[: len(good)], s[len(good):][[j for j, kk in enumerate(kinds) if kk == k]]])
                    for k in sorted(set(kinds))]
        print(f"  {name:12s} {roc_auc(labels, s):11.3f}  {np.median(s[: len(good)]):11.3f}  {np.median(s[len(good):]):10.3f}  "
              + "  ".join(f"{v:13.3f}" for v in per_kind))


if __name__ == "__main__":
    main()
