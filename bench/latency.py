"""Median batch-1 latency of exported models at their own working size (2 threads),
measured round-robin so a change in the host's load hits every model alike.

    python bench/latency.py MODEL.onnx [MODEL.onnx ...] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from anomaly.runtime import Inspector
    from bottle import latency_ms

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--rounds", type=int, default=5, help="rounds of 60 timed calls per model (median of rounds)")
    a = p.parse_args()
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
