"""How much the reduced patch-memory search changes what a model says.

    python bench/search_accuracy.py MODEL_DIR DATA [DATA ...]

For a trained feature model with a reduced memory search (ModelConfig.memory_search_dims),
scores the test images of each MVTec-style DATA folder twice: with the model as trained
and with the same memory searched exactly (all channels, one block). Reports, per cell
of the memory's grid, how often the reduced search returned the exact nearest patch and
by how much it overestimated the distance otherwise (in units of the memory's alarm
level, the distance that counts as 1 in the combined map), and, per image, the largest
change of the calibrated image score and how many verdicts changed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anomaly.evaluation.datasets import find_test_set, load_images  # noqa: E402
from anomaly.training.detector import Detector  # noqa: E402
from anomaly.training.networks import PatchMemory  # noqa: E402
from anomaly.training.fit import to_tensor  # noqa: E402


@contextmanager
def exact_search(memory: PatchMemory) -> Iterator[None]:
    """The same memory searched on all channels, in one block, while inside."""
    saved = memory.search_dims, memory.search_blocks, memory.memory_sqnorm.clone()
    memory.search_dims, memory.search_blocks = 0, 1
    memory.memory_sqnorm.copy_(memory.memory.pow(2).sum(dim=1))
    try:
        yield
    finally:
        memory.search_dims, memory.search_blocks = saved[:2]
        memory.memory_sqnorm.copy_(saved[2])


def searched_memory(module) -> PatchMemory:
    memory = module.memory if module.memory is not None else module.net
    assert isinstance(memory, PatchMemory) and memory.search_dims, "the model has no reduced memory search"
    return memory


@torch.no_grad()
def compare(det: Detector, data: Path) -> dict[str, float]:
    module = det.module.eval()
    memory = searched_memory(module)
    unit = float(module.residual_scale[1]) if module.memory is not None else float(module.map_scale)
    samples = find_test_set(data)
    images, _ = load_images([s.path for s in samples])
    cell_err, score_diff, flips = [], [], 0
    threshold = det.calibration.image_threshold if det.calibration else 1.0
    for img in images:
        views, _ = det._fit(img)
        x = to_tensor(views)
        f = module.standardized_features(x)
        reduced_dist, reduced_score = memory(f), module(x)[1]
        with exact_search(memory):
            exact_dist, exact_score = memory(f), module(x)[1]
        cell_err.append(((reduced_dist - exact_dist) / unit).flatten().numpy())
        score_diff.append(float((reduced_score - exact_score).abs().max()))
        flips += int(bool(((reduced_score >= threshold) != (exact_score >= threshold)).any()))
    err = np.concatenate(cell_err)
    return {"images": len(images), "cells": err.size, "exact_share": float((np.abs(err) < 1e-4).mean()),
            "err_mean": float(err.mean()), "err_p99": float(np.quantile(err, 0.99)),
            "err_p999": float(np.quantile(err, 0.999)), "err_max": float(err.max()), "err_min": float(err.min()),
            "score_diff_max": max(score_diff), "score_diff_mean": float(np.mean(score_diff)), "verdict_changes": flips}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("data", nargs="+")
    a = p.parse_args()
    det = Detector.load(a.model)
    cfg = det.model_config
    print(f"model {a.model}: search on {cfg.memory_search_dims} axes, {cfg.memory_search_blocks} blocks, "
          f"memory {cfg.memory_size}")
    print("| data | images | cells | exact nearest | error mean / p99 / p99.9 / max (alarm units) "
          "| image score change max / mean | verdict changes |")
    print("|---|---|---|---|---|---|---|")
    for data in a.data:
        r = compare(det, Path(data))
        print(f"| {Path(data).name} | {r['images']} | {r['cells']} | {100 * r['exact_share']:.2f}% "
              f"| {r['err_mean']:.5f} / {r['err_p99']:.4f} / {r['err_p999']:.4f} / {r['err_max']:.4f} "
              f"| {r['score_diff_max']:.4f} / {r['score_diff_mean']:.5f} | {r['verdict_changes']} |")
        assert r["err_min"] > -1e-3, "a reduced search can only overestimate the nearest distance"


if __name__ == "__main__":
    main()
