"""Is the texture check short of normal data? Trains the default model on half of a
bench/textures.py training set and compares it with the whole set.

    python bench/texture_data_scale.py /tmp/tx/data/independent-quadrants-val-test120/grass [...] [--seeds 0,1]

Each folder is a quadrants-val set of bench/textures.py (80 training crops, even ones
from the top-left quadrant, odd ones from the bottom-right). Two halves of 40 crops:
- one-quadrant: the even crops, so half the crops and half the photo's area;
- both-quadrants: crops 0, 1, 4, 5, 8, ...: half the crops from the same area.
Validation and test crops are the set's own (linked, not copied). If image AUROC
fell clearly with half the data, the texture gap would be a shortage of normal
examples, which real categories (hundreds of full-size photos) would not share. The
whole set's figures are bench/textures.py's rows for the same data and seed.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results_texture_data_scale.md"
HALVES = {"one-quadrant": lambda i: i % 2 == 0, "both-quadrants": lambda i: (i // 2) % 2 == 0}


def half_set(source: Path, half: str, root: Path) -> Path:
    """An MVTec-style folder with `half` of source's training crops, the rest linked."""
    out = root / half / source.name
    (out / "train/good").mkdir(parents=True, exist_ok=True)
    for sub in ("test", "ground_truth", "validation"):
        link = out / sub
        if (source / sub).exists() and not link.exists():
            link.symlink_to((source / sub).resolve())
    for f in sorted((source / "train/good").glob("*.png")):
        link = out / "train/good" / f.name
        if HALVES[half](int(f.stem)) and not link.exists():
            link.symlink_to(f.resolve())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", type=Path, help="bench/textures.py quadrants-val texture folders")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/texture-data-scale"))
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()

    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector
    from anomaly.evaluation.evaluate import evaluate

    rows = []
    for source in a.sets:
        for seed in (int(s) for s in a.seeds.split(",")):
            for half in HALVES:
                data = half_set(source, half, a.workdir)
                t0 = time.perf_counter()
                det = Detector(ModelConfig(), TrainConfig(epochs=a.epochs, seed=seed)).fit(data, progress=False)
                train_s = time.perf_counter() - t0
                r = evaluate(det, data, progress=False)
                rows.append((source.name, seed, half, len(list((data / "train/good").iterdir())), r, train_s))
                print(source.name, seed, half, {k: round(r[k], 3) for k in ("image_auroc", "pixel_auroc", "pixel_aupro")},
                      f"{train_s:.0f} s", flush=True)
    lines = ["# Texture check with half the training crops", "",
             f"- command: `python bench/{Path(__file__).name} {shlex.join(sys.argv[1:])}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M')} UTC; machine: {platform.machine()}, 2 cores",
             f"- default model, {a.epochs} epochs; evaluated in torch (the ONNX export gives the same maps: parity test)", "",
             "| texture | seed | training crops | crops | image AUROC | pixel AUROC | AUPRO | train s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {t} | {s} | {h} | {n} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['pixel_aupro']:.3f} | {ts:.0f} |"
              for t, s, h, n, r, ts in rows]
    a.out.write_text("\n".join(lines) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
