"""Inference speed of an exported model on this CPU: batch-1 latency, batch-8
throughput and folder-scoring throughput.

    python bench/speed.py [--onnx models/default.onnx] [--threads 2] [--rounds 3]
    python bench/speed.py --onnx a.onnx --onnx b.onnx     # several files, timed round-robin
    python bench/speed.py --quick                          # smoke run (seconds)

1. Batch-1 latency: one raw model call (`Inspector.run`) on a working-size square,
   median and p99 of `--runs` calls after 5 warm-up calls.
2. Batch-8 throughput: images/s from the median time of batch-8 calls.
3. Folder scoring: `anomaly score --overlays` (decode, inference, regions, overlay and
   mask files, results) on copies of sample_images/washer/test, a short and a long folder;
   the steady rate is (long - short images) / (long - short seconds), so process start-up
   and the first, slow model call drop out. Shown with its share of the raw batch-8 rate.

With several files, each round times every file in turn, so a change of the host's
load (the machine may be shared) hits all of them alike; medians over `--rounds`.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ONNX, ROOT, SAMPLES, anomaly_cli, batch1_latency_ms, machine, timed_calls


def batch_throughput(onnx_path: Path, batch: int, runs: int, threads: int) -> float:
    """Images per second of raw model calls on batches of `batch` working-size squares."""
    from anomaly.inspection.inspector import Inspector

    insp = Inspector(onnx_path, threads=threads)
    size = insp.info.grid[0]
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    return batch / float(np.median(timed_calls(lambda: insp.run(x), runs, warmup=2)))


def copies(work: Path, n: int) -> Path:
    """A folder of n images: the sample test images, repeated."""
    src = sorted((SAMPLES / "test").rglob("*.png"))
    folder = work / f"in{n}"
    for i in range(n):
        dst = folder / f"rep{i // len(src):02d}" / src[i % len(src)].relative_to(SAMPLES / "test")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src[i % len(src)], dst)
    return folder


def folder_rate(onnx_path: Path, short: Path, long: Path, n_short: int, n_long: int, threads: int, work: Path) -> float:
    """Steady images/s of `anomaly score --overlays` (start-up removed by differencing)."""
    seconds = []
    for folder in (short, long):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        code, s, _ = anomaly_cli(
            "score",
            folder,
            "--model",
            onnx_path,
            "--out",
            out,
            "--overlays",
            "--quiet",
            "--threads",
            str(threads),
            check=False,
        )
        if code not in (0, 1):  # 1: defects found, as expected on the samples
            sys.exit(f"error: anomaly score exited {code}")
        seconds.append(s)
    return (n_long - n_short) / (seconds[1] - seconds[0]) if seconds[1] > seconds[0] else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--onnx", type=Path, action="append", help="exported model (repeatable; default models/default.onnx)"
    )
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 calls per round")
    p.add_argument("--b8-runs", type=int, default=20, help="timed batch-8 calls per round")
    p.add_argument(
        "--images",
        type=int,
        nargs=2,
        default=[64, 320],
        metavar=("SHORT", "LONG"),
        help="images in the short and the long folder-scoring run",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="few calls, small folders: a smoke run, not a measurement")
    a = p.parse_args()
    models = a.onnx or [DEFAULT_ONNX]
    if a.quick:
        a.runs, a.b8_runs, a.images, a.rounds = 10, 3, [8, 24], 1
    print(f"machine: {machine()}")
    print(f"command: python bench/speed.py {shlex.join(sys.argv[1:])}\n")
    work = Path(tempfile.mkdtemp(prefix="anomaly-speed-"))
    try:
        short, long = copies(work, a.images[0]), copies(work, a.images[1])
        rows: dict[Path, dict[str, list[float]]] = {m: {"b1": [], "p99": [], "b8": [], "folder": []} for m in models}
        for _ in range(a.rounds):
            for m in models:
                med, p99 = batch1_latency_ms(m, a.runs, a.threads)
                rows[m]["b1"].append(med)
                rows[m]["p99"].append(p99)
                rows[m]["b8"].append(batch_throughput(m, 8, a.b8_runs, a.threads))
                rows[m]["folder"].append(folder_rate(m, short, long, *a.images, a.threads, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "| model | batch-1 ms (median) | batch-1 ms (p99) | batch-8 images/s | folder scoring images/s | "
        "folder / raw |\n|---|---|---|---|---|---|"
    )
    for m, r in rows.items():
        b8, folder = float(np.median(r["b8"])), float(np.median(r["folder"]))
        name = m.resolve().relative_to(ROOT) if m.resolve().is_relative_to(ROOT) else m
        print(
            f"| {name} | {np.median(r['b1']):.1f} | {np.median(r['p99']):.1f} | {b8:.1f} | {folder:.1f} | "
            f"{folder / b8:.0%} |"
        )


if __name__ == "__main__":
    main()
