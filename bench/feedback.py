"""The inspector feedback loop: what a handful of confirmed verdicts does to the threshold.

    python bench/feedback.py MODEL.onnx ../shared/datasets/mvtec_bottle
    python bench/feedback.py --quick          # the bundled model on the bundled samples

Scores a category's test split with the model, then, for each of several seeds, plays one
review: an inspector confirms K randomly chosen defective parts and K good ones, the
dashboard's suggestion (`anomaly.ui.feedback.suggest_threshold`) re-sets the threshold,
and recall and false rejects are measured on the parts that review did not see, before
and after. Prints the mean over seeds.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ONNX, SAMPLES, machine


def review_gain(scores: np.ndarray, labels: np.ndarray, threshold: float, confirmed: int, seed: int) -> dict:
    from anomaly.ui.feedback import recall_and_false_rejects, suggest_threshold

    rng = np.random.default_rng(seed)
    defects, goods = np.flatnonzero(labels), np.flatnonzero(~labels)
    seen_d = rng.choice(defects, size=min(confirmed, len(defects)), replace=False)
    seen_g = rng.choice(goods, size=min(confirmed, len(goods)), replace=False)
    new = suggest_threshold(scores[seen_d], scores[seen_g], threshold)
    rest = np.setdiff1d(np.arange(len(scores)), np.r_[seen_d, seen_g])
    before = recall_and_false_rejects(scores[rest], labels[rest], threshold)
    after = recall_and_false_rejects(scores[rest], labels[rest], new)
    return {
        "threshold": new,
        "recall_before": before[0],
        "fr_before": before[1],
        "recall_after": after[0],
        "fr_after": after[1],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=Path)
    p.add_argument("data", nargs="?", type=Path)
    p.add_argument("--confirmed", type=int, default=5, help="defective (and good) parts confirmed in one review")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.model, a.data, a.seeds = DEFAULT_ONNX, SAMPLES, 3
    if a.model is None or a.data is None:
        p.error("MODEL and DATA are required (or --quick)")
    from anomaly.evaluation.datasets import find_test_set
    from anomaly.inspection.imageio import read_image
    from anomaly.inspection.inspector import Inspector

    inspector = Inspector(a.model)
    samples = find_test_set(a.data)
    _, scores = inspector.score([read_image(s.path) for s in samples])
    labels = np.array([s.is_defective for s in samples])
    rows = [review_gain(scores, labels, inspector.image_threshold, a.confirmed, seed) for seed in range(a.seeds)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(f"machine: {machine()}")
    print(f"command: python bench/feedback.py {shlex.join(sys.argv[1:])}\n")
    print(
        "| data | confirmed per review | recall before | false rejects before | recall after | "
        "false rejects after | threshold after (mean) |\n|---|---|---|---|---|---|---|"
    )
    print(
        f"| {a.data.name} | {a.confirmed} defects + {a.confirmed} good | {mean['recall_before']:.3f} | "
        f"{mean['fr_before']:.3f} | {mean['recall_after']:.3f} | {mean['fr_after']:.3f} | {mean['threshold']:.3f} |"
    )


if __name__ == "__main__":
    main()
