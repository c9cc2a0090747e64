"""How long the default takes to train on N good images.

    python bench/train_time.py --texture grass --n-train 400
    python bench/train_time.py --data FOLDER [--repeat 4] [--train-json '{"max_epoch_rows": 0}'] [--out MODEL_DIR]

Texture crops from bench/textures.py (160 px, quadrants split), N of them, or any folder
of good images (plain or MVTec-style); `--repeat K` links each of its training images K
times into a scratch folder, to time a set K times larger (a time, not an accuracy:
repeated images add no information). 15% is held out for calibration, as always.
Prints each phase's progress bar (features, epochs, head, memory), the total and the
epochs run (training stops early when the held-out loss stalls, so the time depends
on the data, not only on its size). `--out` saves the model folder and its ONNX export
(model.onnx), for `anomaly evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anomaly.config import ModelConfig, TrainConfig  # noqa: E402
from anomaly.evaluation.datasets import find_dataset  # noqa: E402
from anomaly.training.detector import Detector  # noqa: E402
from textures import build  # noqa: E402


def repeated(data: Path, times: int, workdir: Path) -> Path:
    """A folder linking each training image of `data` `times` times (fresh each run)."""
    out = workdir / f"{data.name}-x{times}"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    images = find_dataset(data).train
    for k in range(times):
        for path in images:
            (out / f"{k}_{path.name}").symlink_to(path.resolve())
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texture", default="grass")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--data", type=Path, help="time this folder instead of texture crops")
    p.add_argument("--repeat", type=int, default=1, help="with --data: use each training image this many times")
    p.add_argument("--train-json", default="", help="TrainConfig fields as JSON")
    p.add_argument("--out", type=Path, help="save the trained model folder here (and model.onnx in it)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-train-time"))
    a = p.parse_args()
    if a.data is None:
        data, label = build(a.texture, a.workdir, n_train=a.n_train, split="quadrants"), f"{a.texture}, {a.n_train}"
    else:
        data = repeated(a.data, a.repeat, a.workdir) if a.repeat > 1 else a.data
        label = f"{a.data.name} x{a.repeat}"
    t = time.perf_counter()
    det = Detector(ModelConfig(), TrainConfig(**json.loads(a.train_json or "{}"))).fit(data, progress=True)
    print(f"{label} ({det.summary['train_available']} good images: {det.summary['train_count']} trained on, "
          f"{det.summary['holdout_count']} held out): "
          f"trained in {time.perf_counter() - t:.0f} s, {det.summary['epochs_run']} epochs")
    if a.out:
        from anomaly.training.export import export_onnx

        det.save(a.out)
        export_onnx(det, a.out / "model.onnx")
