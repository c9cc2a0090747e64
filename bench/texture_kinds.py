"""Which test defects does a texture model miss? Image AUROC per defect kind (each kind's
defective crops against all good crops) and per defect size, from an exported model and
the folder `bench/textures.py --defects independent` made for it.

    python bench/texture_kinds.py MODEL.onnx FOLDER [MODEL.onnx FOLDER ...]

The kind of each defective crop follows from its index (textures.defect_kind); the size is
its mask's share of the crop. Sizes are split at 0.5% and 1.5% of the crop.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SIZE_BINS = [(0.0, 0.005, "< 0.5%"), (0.005, 0.015, "0.5-1.5%"), (0.015, 1.0, ">= 1.5%")]


def per_kind(model: Path, folder: Path) -> dict[str, tuple[float, int]]:
    from anomaly.inspection.imageio import read_image, read_mask
    from anomaly.evaluation.metrics import roc_auc
    from anomaly.inspection.inspector import Inspector
    from textures import defect_kind

    inspector = Inspector(model)
    good = [read_image(f) for f in sorted((folder / "test" / "good").glob("*.png"))]
    bad_files = sorted((folder / "test" / "synthetic").glob("*.png"))
    if not good or not bad_files:
        raise SystemExit(f"{folder}: needs test/good/*.png and test/synthetic/*.png (a texture folder written by "
                         "bench/textures.py, e.g. WORKDIR/data/independent-quadrants-val-test120/grass)")
    good_scores = inspector.score(good)[1]
    bad_scores = inspector.score([read_image(f) for f in bad_files])[1]
    is_gray = bool(np.all(good[0][:, :, 0] == good[0][:, :, 1]))
    kinds = [defect_kind(int(f.stem), is_gray) for f in bad_files]
    areas = [float(read_mask(folder / "ground_truth" / "synthetic" / f"{f.stem}_mask.png", good[0].shape[:2]).mean())
             for f in bad_files]
    groups: dict[str, list[int]] = {}
    for i, (kind, area) in enumerate(zip(kinds, areas)):
        groups.setdefault(kind, []).append(i)
        size = next(label for lo, hi, label in SIZE_BINS if lo <= area < hi)
        groups.setdefault(f"size {size}", []).append(i)
    result = {}
    for name, idx in groups.items():
        labels = np.r_[np.zeros(len(good_scores), bool), np.ones(len(idx), bool)]
        result[name] = (roc_auc(labels, np.r_[good_scores, bad_scores[idx]]), len(idx))
    return result


def main() -> None:
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for model, folder in zip(map(Path, args[::2]), map(Path, args[1::2])):
        print(f"\n{model} on {folder}\n\n| defects | image AUROC | crops |\n|---|---|---|")
        for name, (auroc, n) in sorted(per_kind(model, folder).items()):
            print(f"| {name} | {auroc:.3f} | {n} |")


if __name__ == "__main__":
    main()
