"""Export a model folder with its patch memory searched exactly (all channels, one block),
for a speed comparison with the reduced search it was trained with:

    python bench/export_exact_search.py models/default /tmp/default-exact.onnx
    python bench/bench_speed.py --compare-onnx /tmp/default-exact.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anomaly.training.detector import Detector  # noqa: E402
from anomaly.training.export import export_onnx  # noqa: E402
from search_accuracy import exact_search, searched_memory  # noqa: E402

if __name__ == "__main__":
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    det = Detector.load(model_dir)
    with exact_search(searched_memory(det.module)):
        export_onnx(det, out)
    print(f"exported {out} (exact memory search)")
