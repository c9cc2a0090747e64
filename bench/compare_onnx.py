"""Batch-1 latency and batch-8 throughput of several ONNX files, timed round-robin in
chunks so that a change of the host's load hits them all alike (2 intra-op threads).

    python bench/compare_onnx.py A.onnx B.onnx [...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anomaly.inspection.inspector import Inspector  # noqa: E402
from bench_speed import interleaved  # noqa: E402

if __name__ == "__main__":
    paths = sys.argv[1:]
    sessions = {p: Inspector(p, threads=2) for p in paths}
    size = next(iter(sessions.values())).info.input_size
    x1 = np.random.rand(1, 3, size, size).astype(np.float32)
    x8 = np.random.rand(8, 3, size, size).astype(np.float32)
    b1 = interleaved({p: (lambda s=s: s.run(x1)) for p, s in sessions.items()}, runs=150, warmup=10)
    b8 = interleaved({p: (lambda s=s: s.run(x8)) for p, s in sessions.items()}, runs=20, warmup=3)
    for p in paths:
        print(f"{p}: batch-1 median {1000 * np.median(b1[p]):.2f} ms (p90 {1000 * np.percentile(b1[p], 90):.2f}), "
              f"batch-8 {8 / np.median(b8[p]):.1f} images/s")
