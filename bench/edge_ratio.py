"""How much hotter good parts are at the frame's edge, measured on images the model never
saw, next to the damping an edge-calibrated model fitted on its held-out images.

    python bench/edge_ratio.py MODEL_WITHOUT_EDGE.onnx FOLDER [--fitted MODEL_WITH_EDGE.onnx]
                               [--subset-size 12 --subsets 200]

Scores FOLDER/test/good with the first model (trained with --no-edge-calibration) and
fits anomaly.training.calibrate.edge_profile on those maps: the per-ring ratio of the 99% quantile
above the median to that of the band inside. With --fitted, prints the ratio the
edge-calibrated model fitted on its own held-out images (read from the exported graph:
the 128-entry table that starts above 1 and never rises inwards). If the held-out images
share pixels with the training images, the fitted ratio comes out larger than the one
new images show (BENCHMARKS.md section 1b). With --subset-size, also fits the profile on
random subsets of that many new images, as a held-out set of that size would, and prints
the spread of the fitted ratio: how far a fit on a few images strays from the fit on all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
RINGS_SHOWN = [0, 4, 8, 16, 24]


def fitted_scale(path: Path) -> np.ndarray | None:
    import onnx
    from onnx import numpy_helper

    for init in onnx.load(str(path)).graph.initializer:
        a = numpy_helper.to_array(init)
        if a.ndim == 1 and a.dtype == np.float32 and a.size >= 64 and a[0] > 1.0 and np.all(np.diff(a) <= 1e-6):
            return a
    return None


def main() -> None:
    from anomaly.training.calibrate import edge_profile
    from anomaly.inspection.imageio import prepare, read_image
    from anomaly.training.model import edge_rings
    from anomaly.inspection.inspector import Inspector

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("folder", type=Path)
    p.add_argument("--fitted", type=Path)
    p.add_argument("--subset-size", type=int, default=0)
    p.add_argument("--subsets", type=int, default=200)
    a = p.parse_args()
    inspector = Inspector(a.model)
    size, mode, tiles = inspector.info.grid
    good = sorted((a.folder / "test" / "good").glob("*.png"))
    views = [prepare(read_image(path), size, mode, tiles)[0] for path in good]
    if any(len(v) != 1 for v in views):
        sys.exit("edge_ratio: tiled images are not supported (one view per image expected)")
    maps, _ = inspector.run(np.stack([v[0] for v in views]).transpose(0, 3, 1, 2))
    rings = edge_rings(size)
    _, scale = edge_profile(maps, np.ones_like(maps, bool), rings, size // 8)
    print(f"{a.folder.name}: {len(good)} new good images, ratio at rings {RINGS_SHOWN}: {np.round(scale[RINGS_SHOWN], 2)}")
    if a.subset_size:
        rng = np.random.default_rng(0)
        fits = np.stack([edge_profile(maps[pick], np.ones_like(maps[pick], bool), rings, size // 8)[1]
                         for pick in (rng.choice(len(maps), a.subset_size, replace=False) for _ in range(a.subsets))])
        q = np.quantile(fits[:, RINGS_SHOWN], [0.1, 0.5, 0.9], axis=0)
        print(f"  fitted on {a.subsets} random subsets of {a.subset_size}: 10% / median / 90% at those rings:")
        for name, row in zip(("10%", "median", "90%"), q):
            print(f"    {name:>6}: {np.round(row, 2)}")
    if a.fitted is not None:
        fit = fitted_scale(a.fitted)
        print(f"  fitted on the held-out images by {a.fitted.name}: "
              f"{'not found' if fit is None else np.round(fit[RINGS_SHOWN], 2)}")


if __name__ == "__main__":
    main()
