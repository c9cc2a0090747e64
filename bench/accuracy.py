"""Accuracy of a training recipe on every real category: train, export, evaluate.

    python bench/accuracy.py                          # the default, every category in ../shared/datasets
    python bench/accuracy.py --categories bottle -- --model patch_memory
    python bench/accuracy.py --quick                  # smoke run on the bundled samples (seconds)

For each MVTec-style category folder (train/good, test/..., ground_truth/...) it runs
`anomaly train DATA --out MODEL` (timed: wall time of the command, start-up included;
anything after `--` is passed on to `anomaly train`), `anomaly export`, then evaluates the
ONNX file with `anomaly.evaluation.evaluate.evaluate` and times one batch-1 model call
(2 threads, median of 60). Prints one markdown row per category: image AUROC, pixel AUROC,
AUPRO (FPR limit 0.3), image F1 at the shipped (calibrated) threshold, the best F1 any
threshold reaches on the test set (an oracle), defects caught and good parts rejected at
the shipped threshold, train time, peak memory of training and latency.
`--json FILE` also appends each row as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATASETS, QUICK_TRAIN, SAMPLES, anomaly_cli, batch1_latency_ms, categories, machine

HEADER = (
    "| category | image AUROC | pixel AUROC | AUPRO | F1 shipped | best F1 | defects caught | good rejected "
    "| train s (epochs) | train peak MB | ms b1 |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def measure(data: Path, workdir: Path, train_args: list[str], latency_runs: int = 60) -> dict:
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.inspection.inspector import Inspector

    model_dir, onnx_path = workdir / data.name, workdir / f"{data.name}.onnx"
    _, train_s, peak_mb = anomaly_cli("train", data, "--out", model_dir, "--quiet", *train_args)
    anomaly_cli("export", model_dir, "--out", onnx_path)
    summary = json.loads((model_dir / "config.json").read_text())["summary"]
    result = evaluate(Inspector(onnx_path, threads=2), data, progress=False)
    c = result["confusion"]
    return {
        "category": data.name,
        "image_auroc": result["image_auroc"],
        "pixel_auroc": result["pixel_auroc"],
        "pixel_aupro": result["pixel_aupro"],
        "image_f1": result["image_f1"],
        "best_image_f1": result["best_image_f1"]["f1"],
        "caught": f"{c['tp']} of {c['tp'] + c['fn']}",
        "good_rejected": f"{c['fp']} of {c['fp'] + c['tn']}",
        "train_s": round(train_s, 1),
        "epochs_run": summary["epochs_run"],
        "train_peak_mb": round(peak_mb),
        "latency_ms_b1": round(batch1_latency_ms(onnx_path, runs=latency_runs)[0], 1),
        "train_args": train_args,
    }


def markdown(r: dict) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    return (
        f"| {r['category']} | {f(r['image_auroc'])} | {f(r['pixel_auroc'])} | {f(r['pixel_aupro'])} | "
        f"{f(r['image_f1'])} | {f(r['best_image_f1'])} | {r['caught']} | {r['good_rejected']} | "
        f"{r['train_s']:.0f} ({r['epochs_run']}) | {r['train_peak_mb']} | {r['latency_ms_b1']} |"
    )


def main() -> None:
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=Path, default=DATASETS, help="folder of MVTec-style categories")
    p.add_argument("--categories", nargs="*", help="category folder names (default: all under --datasets)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-bench/accuracy"))
    p.add_argument("--json", type=Path, help="append each row as a JSON line to this file")
    p.add_argument("--quick", action="store_true", help="tiny training on sample_images/washer (smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        folders, train_args, latency_runs = [SAMPLES], QUICK_TRAIN + train_args, 10
    else:
        found = categories(a.datasets)
        folders = [f for f in found if not a.categories or f.name in a.categories]
        latency_runs = 60
        if not folders:
            sys.exit(f"error: no MVTec-style categories under {a.datasets} (see ../shared/datasets/README.md)")
    print(f"machine: {machine()}")
    print(f"command: python bench/accuracy.py {shlex.join(sys.argv[1:])}\n")
    print(HEADER, flush=True)
    for data in folders:
        row = measure(data, a.workdir, train_args, latency_runs)
        print(markdown(row), flush=True)
        if a.json:
            with a.json.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
