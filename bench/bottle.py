"""Accuracy benchmark on real defects: train, export, evaluate one configuration.

    python bench/bottle.py --name ae-l2 --model ae --loss l2 --residual l2 [--epochs N]

Trains on ../shared/datasets/mvtec_bottle/train/good at 256x256, evaluates the exported
ONNX file on its test split (image AUROC, pixel AUROC, AUPRO), measures ONNX batch-1
latency, and appends a JSON line to bench/results_bottle.jsonl with the training time,
the process's peak resident memory and the command that made the row.
`python bench/bottle.py --table` prints the collected rows as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets" / "mvtec_bottle"
RESULTS = ROOT / "bench" / "results_bottle.jsonl"


def median_ms(call, runs: int, warmup: int) -> float:
    """Median wall time of `call()` in milliseconds, after `warmup` untimed calls."""
    import numpy as np

    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def latency_ms(onnx_path: Path, size: int, runs: int = 60) -> float:
    import numpy as np

    from anomaly.inspection.inspector import Inspector

    insp = Inspector(onnx_path, threads=2)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    return median_ms(lambda: insp.run(x), runs, warmup=5)


def run(a: argparse.Namespace) -> dict:
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.training.export import export_onnx
    from anomaly.inspection.inspector import Inspector

    extra = json.loads(a.model_json) if a.model_json else {}
    mc = ModelConfig(kind=a.model, image_size=a.image_size, loss=a.loss, residual=a.residual, **extra)
    train_extra = json.loads(a.train_json) if a.train_json else {}
    tc = TrainConfig(epochs=a.epochs, seed=a.seed, **train_extra)
    out = Path(a.workdir) / a.name
    t0 = time.perf_counter()
    det = Detector(mc, tc).fit(a.data, progress=not a.quiet)
    train_s = time.perf_counter() - t0
    det.save(out)
    onnx_path = export_onnx(det, out / "model.onnx")
    result = evaluate(Inspector(onnx_path), a.data, eval_size=a.image_size, progress=False)
    row = {
        "name": a.name,
        "model": a.model,
        "settings": {**({"loss": a.loss, "residual": a.residual} if a.model != "feature_ae" else {}), **extra, **train_extra},
        "image_auroc": round(result["image_auroc"], 4),
        "pixel_auroc": round(result["pixel_auroc"], 4),
        "pixel_aupro": round(result["pixel_aupro"], 4),
        "image_f1": round(result["image_f1"], 4),
        "train_s": round(train_s, 1),
        "epochs_run": det.summary["epochs_run"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "latency_ms_b1": round(latency_ms(onnx_path, a.image_size), 1),
        "onnx_mb": round(onnx_path.stat().st_size / 1e6, 1),
        "command": "python " + shlex.join(sys.argv),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table() -> str:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    head = ("| name | family | image AUROC | pixel AUROC | AUPRO | image F1 | train s (epochs) | peak RSS MB | "
            "ONNX ms b1 | ONNX MB | command |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['name']} | {r['model']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['pixel_aupro']:.3f} | "
        f"{r['image_f1']:.3f} | {r['train_s']:.0f} ({r['epochs_run']}) | {r['peak_rss_mb']:.0f} | {r['latency_ms_b1']} | "
        f"{r['onnx_mb']} | `{r['command']}` |\n"
        for r in rows
    )
    return head + body


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name")
    p.add_argument("--model", default="feature_ae", choices=["ae", "vae", "feature_ae", "patch_memory"])
    p.add_argument("--loss", default="l2+ssim")
    p.add_argument("--residual", default="l2+ssim")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-json", default="", help="extra ModelConfig fields as JSON")
    p.add_argument("--train-json", default="", help="extra TrainConfig fields as JSON")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--workdir", default="/tmp/anomaly-bench")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--table", action="store_true", help="print collected rows as markdown and exit")
    a = p.parse_args()
    if a.table:
        print(table())
        return
    if not Path(a.data).is_dir():
        sys.exit(f"error: {a.data}: dataset not found (see ../shared/datasets/README.md)")
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
