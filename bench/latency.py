"""Median batch-1 latency of exported models at their own working size (2 threads),
measured round-robin so a change in the host's load hits every model alike.

    python bench/latency.py MODEL.onnx [MODEL.onnx ...] [--rounds 5] [--image PHOTO.png]

With `--image`, each call is `Inspector.score` on that photo instead of one model run on a
working-size square: reading aside, the whole per-image cost, pre-processing and every
tile included (a 2:1 photo is two tiles, so two model runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def photo_ms(onnx_path: Path, photo: np.ndarray, runs: int = 30) -> float:
    """Median wall time of scoring one photo, after 3 warm-up calls."""
    from anomaly.inspection.inspector import Inspector
    from bottle import median_ms

    insp = Inspector(onnx_path, threads=2)
    return median_ms(lambda: insp.score([photo]), runs, warmup=3)


def main() -> None:
    from anomaly.inspection.imageio import read_image
    from anomaly.inspection.inspector import Inspector
    from bottle import latency_ms

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--rounds", type=int, default=5, help="rounds of 60 timed calls per model (median of rounds)")
    p.add_argument("--image", type=Path, help="time scoring this photo end to end (pre-processing, tiles)")
    a = p.parse_args()
    if a.image:
        photo = read_image(a.image)
        print(f"| model | {a.image} | per-image latency, median ms |\n|---|---|---|")
        for m in a.models:
            print(f"| {m} | {photo.shape[1]}x{photo.shape[0]} | {np.median([photo_ms(m, photo) for _ in range(a.rounds)]):.1f} |")
        return
    sizes = {m: Inspector(m).info.grid[0] for m in a.models}
    rounds: dict[Path, list[float]] = {m: [] for m in a.models}
    for _ in range(a.rounds):
        for m in a.models:
            rounds[m].append(latency_ms(m, sizes[m]))
    print("| model | working size | batch-1 latency, median ms |\n|---|---|---|")
    for m in a.models:
        print(f"| {m} | {sizes[m]} | {np.median(rounds[m]):.1f} |")


if __name__ == "__main__":
    main()
