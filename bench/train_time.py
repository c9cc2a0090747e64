"""How long the default takes to train on N good images: texture crops from
bench/textures.py (160 px, quadrants split), N of them, 15% held out for calibration.

    python bench/train_time.py --texture grass --n-train 400

Prints each phase's progress bar (features, epochs, head, memory) and the total.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anomaly.config import ModelConfig, TrainConfig  # noqa: E402
from anomaly.detector import Detector  # noqa: E402
from textures import build  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texture", default="grass")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-train-time"))
    a = p.parse_args()
    data = build(a.texture, a.workdir, n_train=a.n_train, split="quadrants")
    t = time.perf_counter()
    Detector(ModelConfig(), TrainConfig()).fit(data, progress=True)
    print(f"{a.texture}, {a.n_train} good images: trained in {time.perf_counter() - t:.0f} s")
