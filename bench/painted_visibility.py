"""How much the training generator's painted defects change the backbone features.

    python bench/painted_visibility.py DATA [DATA ...] [--views 300] [--out F]

The segmentation head learns from painted defects; on the texture photos it learnt
nothing (bench/texture_components.py). This measures, for each folder of good images,
the change a painted defect makes to the standardised backbone features inside its mask
(mean over channels of the squared difference, painted view minus the same view
unpainted; 1.0 is one standard deviation of the training images' own feature variation
per channel), by defect kind. Standardisation divides by each set's own variation, so a
defect that changes a busy texture by as many gray levels as a smooth bottle moves its
features less. Appends a table per folder to bench/results_painted_visibility.md.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anomaly.training.augment import augment  # noqa: E402
from anomaly.config import ModelConfig, TrainConfig  # noqa: E402
from anomaly.evaluation.datasets import find_dataset, iter_images  # noqa: E402
from anomaly.synthetic.defects import DefectSettings, random_defect  # noqa: E402
from anomaly.inspection.imageio import prepare  # noqa: E402
from anomaly.training.model import InspectionModule  # noqa: E402
from anomaly.training.fit import feature_statistics, to_tensor  # noqa: E402

OUT = ROOT / "bench" / "results_painted_visibility.md"


def visibility(data: Path, views: int, max_images: int = 120) -> tuple[dict[str, list[float]], list[float]]:
    """Per kind: each painted view's median feature change over its mask cells; and a
    sample of the change outside the masks (the receptive field's spill)."""
    mc, tc = ModelConfig(), TrainConfig()
    module = InspectionModule(mc).eval()
    images = [prepare(img, *mc.grid)[0][0] for _, img in iter_images(find_dataset(data).train[:max_images])]
    feature_statistics(module, images, tc.batch_size)
    rng, settings = np.random.default_rng(0), DefectSettings()
    grid = mc.image_size // mc.feature_stride
    per_kind: dict[str, list[float]] = defaultdict(list)
    outside: list[float] = []
    for i in range(views):
        view = augment(images[i % len(images)], tc.augment, rng)
        painted, mask, kind = random_defect(view, rng, settings.kinds, settings.scale_range)
        cells = cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            f = module.inner(module.standardized_features(to_tensor([view, painted])))
        change = (f[1] - f[0]).pow(2).mean(0).numpy()
        if (cells > 0.5).any():
            per_kind[kind].append(float(np.median(change[cells > 0.5])))
        outside.extend(change[cells == 0].ravel()[::7].tolist())
    return per_kind, outside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, nargs="+")
    ap.add_argument("--views", type=int, default=300)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.manual_seed(0)
    lines = [f"\n## `python {shlex.join(sys.argv)}`",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}; "
             "median feature change inside the mask cells (standardised units), per painted view", ""]
    for data in a.data:
        per_kind, outside = visibility(data, a.views)
        every = np.array([x for v in per_kind.values() for x in v])
        lines += [f"### {data.name}", "",
                  f"outside the masks: median {np.median(outside):.3f}, 95th percentile {np.percentile(outside, 95):.3f}", "",
                  "| painted kind | views | median change | share under 0.25 |", "|---|---|---|---|",
                  f"| all | {len(every)} | {np.median(every):.2f} | {np.mean(every < 0.25):.2f} |"]
        lines += [f"| {k} | {len(v)} | {np.median(v):.2f} | {np.mean(np.array(v) < 0.25):.2f} |"
                  for k, v in sorted(per_kind.items())]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    with a.out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
