"""Is the heatmap's maximum the right image score? Image AUROC of the mean of the top k
pixels of each calibrated heatmap (k as a fraction of the image's pixels; 0 = the
maximum, what the model scores), from exported models on their MVTec-style folders.

    python bench/image_score_topk.py MODEL.onnx FOLDER [MODEL.onnx FOLDER ...]

A mean over the hottest pixels integrates evidence along a thin defect (a thread, a
cut) that a single maximum sees only at its peak, and averages away an isolated hot
pixel of normal texture; it also dilutes a defect smaller than k pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
FRACTIONS = [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


def topk_aurocs(model: Path, folder: Path) -> dict[float, float]:
    from anomaly.inspection.imageio import read_image
    from anomaly.evaluation.metrics import roc_auc
    from anomaly.inspection.inspector import Inspector

    inspector = Inspector(model)
    files = sorted(f for d in (folder / "test").iterdir() if d.is_dir() for f in d.glob("*.png"))
    labels = np.array([f.parent.name != "good" for f in files])
    scores: dict[float, list[float]] = {fr: [] for fr in FRACTIONS}
    for i in range(0, len(files), 8):
        maps, _ = inspector.score([read_image(f) for f in files[i : i + 8]])
        for m in maps:
            hottest = np.sort(m.ravel())[::-1]
            for fr in FRACTIONS:
                scores[fr].append(float(hottest[: max(1, round(fr * hottest.size))].mean()))
    return {fr: roc_auc(labels, np.asarray(s)) for fr, s in scores.items()}


def main() -> None:
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    print("| data | " + " | ".join("max" if fr == 0 else f"top {fr:.2%}" for fr in FRACTIONS) + " |")
    print("|---|" + "---|" * len(FRACTIONS))
    for model, folder in zip(args[::2], args[1::2]):
        r = topk_aurocs(Path(model), Path(folder))
        print(f"| {Path(folder).name} | " + " | ".join(f"{a:.3f}" for a in r.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
