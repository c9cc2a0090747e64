"""Inference speed (and, optionally, accuracy) of exported models on this CPU, side by
side: each file on each backend (onnxruntime, and OpenVINO when installed), float and
INT8 files alike, timed round-robin in one run.

    python bench/speed.py [--onnx models/default.onnx] [--threads 2] [--rounds 3]
    python bench/speed.py --onnx a.onnx --onnx a_int8.onnx       # several files
    python bench/speed.py --int8-from models/default --calibration-images sample_images/washer
                                                                  # also an INT8 export of a model folder
    python bench/speed.py --onnx b.onnx --onnx b_int8.onnx --evaluate ../shared/datasets/mvtec_bottle
    python bench/speed.py --quick                                 # smoke run (seconds)

Per variant (file x backend):
1. Batch-1 latency: one raw model call (`Inspector.run`) on a working-size square,
   median and p99 of `--runs` calls after 5 warm-up calls.
2. Batch-8 throughput: images/s from the median time of batch-8 calls.
3. Folder scoring: `anomaly score --backend B` (decode, inference, regions, result rows),
   and the same with `--overlays` (plus overlay and mask files), on copies of
   sample_images/washer/test, a short and a long folder; the steady rate is
   (long - short images) / (long - short seconds), so process start-up and the first,
   slow model call drop out. Each shown with its share of the raw batch-8 rate of the
   same variant.
4. With `--profile`: each onnxruntime variant's batch-1 call split by operator type
   (onnxruntime's profiler), the costliest types side by side.
5. With `--evaluate DATA` (repeatable): `anomaly evaluate FILE DATA --backend B` for every
   file whose metadata names DATA's folder as its training data: image AUROC, pixel
   AUROC, AUPRO and image F1 at the threshold the file ships with.

Each round times every variant in turn, so a change of the host's load (the machine may
be shared) hits all of them alike; medians over `--rounds`. The "x fp32" column is each
variant's batch-1 speed-up over the float onnxruntime row of the same model.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ONNX, ROOT, SAMPLES, anomaly_cli, machine, timed_calls

DEFAULT_MODEL_DIR = ROOT / "models" / "default"


@dataclass
class Variant:
    path: Path
    backend: str
    precision: str  # "fp32" or "INT8", from the file's metadata
    train_data: str  # the training folder's name, from the metadata
    timings: dict[str, list[float]] = field(
        default_factory=lambda: {"b1": [], "p99": [], "b8": [], "results_only": [], "with_overlays": []}
    )

    @property
    def name(self) -> str:
        p = self.path.resolve()
        return str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else self.path.name)


def inspector(v: Variant, threads: int):
    from anomaly.inspection.inspector import Inspector

    return Inspector(v.path, threads=threads, backend=v.backend)  # type: ignore[arg-type]


def latency_ms(v: Variant, runs: int, threads: int) -> tuple[float, float]:
    """Median and p99 of one raw model call at batch 1 (a working-size square), in ms."""
    insp = inspector(v, threads)
    size = insp.info.grid[0]
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    t = timed_calls(lambda: insp.run(x), runs, warmup=5) * 1e3
    return float(np.median(t)), float(np.percentile(t, 99))


def batch_throughput(v: Variant, batch: int, runs: int, threads: int) -> float:
    """Images per second of raw model calls on batches of `batch` working-size squares."""
    insp = inspector(v, threads)
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


def folder_rate(
    v: Variant, short: Path, long: Path, n_short: int, n_long: int, threads: int, work: Path, overlays: bool
) -> float:
    """Steady images/s of `anomaly score` (with `--overlays` if asked; start-up removed
    by differencing)."""
    seconds = []
    for folder in (short, long):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        code, s, _ = anomaly_cli(
            "score",
            folder,
            "--model",
            v.path,
            "--out",
            out,
            *(["--overlays"] if overlays else []),
            "--quiet",
            "--threads",
            str(threads),
            "--backend",
            v.backend,
            check=False,
        )
        if code not in (0, 1):  # 1: defects found, as expected on the samples
            sys.exit(f"error: anomaly score --backend {v.backend} exited {code}")
        seconds.append(s)
    return (n_long - n_short) / (seconds[1] - seconds[0]) if seconds[1] > seconds[0] else float("nan")


def kernel_split(v: Variant, runs: int, threads: int, work: Path) -> dict[str, float]:
    """Milliseconds per batch-1 call spent in each operator type, by onnxruntime's
    profiler, with the Inspector's session settings."""
    import onnxruntime as ort

    from anomaly.inspection.inspector import session_options

    opts = session_options(threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / "profile")
    session = ort.InferenceSession(str(v.path), opts, providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]  # (batch, 3, size, size)
    x = np.random.default_rng(0).random((1, *image.shape[1:]), dtype=np.float32)
    for _ in range(runs):
        session.run(None, {image.name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    split: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            split[op] = split.get(op, 0.0) + e["dur"] / 1e3 / runs  # dur: microseconds
    return split


def print_kernel_split(variants: list[Variant], splits: list[dict[str, float]], top: int = 6) -> None:
    """Each variant's costliest operator types side by side, and the sum of all kernels."""
    costliest = {op for s in splits for op, _ in sorted(s.items(), key=lambda kv: -kv[1])[:top]}
    ops = sorted(costliest, key=lambda op: -splits[0].get(op, 0.0))
    print("\n| operator (ms per batch-1 call) | " + " | ".join(f"{v.name} {v.precision}" for v in variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for op in ops:
        print(f"| {op} | " + " | ".join(f"{s.get(op, 0.0):.2f}" for s in splits) + " |")
    print("| all kernels | " + " | ".join(f"{sum(s.values()):.2f}" for s in splits) + " |")


def accuracy(v: Variant, data: Path, work: Path) -> dict[str, float]:
    """`anomaly evaluate` of one variant: the overall metrics of its JSON."""
    out = work / "eval.json"
    anomaly_cli("evaluate", v.path, data, "--json", out, "--backend", v.backend, "--quiet")
    r = json.loads(out.read_text())
    return {k: float(r[k]) for k in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1")}


def describe_file(path: Path) -> tuple[str, str]:
    """(precision, training folder name) from a file's metadata."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    meta = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return ("INT8" if "quantization" in meta else "fp32"), meta.get("train_data", "?")


def export_int8(model_dir: Path, calibration: Path | None, work: Path) -> Path:
    """An INT8 file of a model folder, written into the scratch folder."""
    out = work / f"{model_dir.name}_int8.onnx"
    extra = ["--calibration-images", str(calibration)] if calibration else []
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly", "export", str(model_dir), "--out", str(out), "--int8", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"error: INT8 export of {model_dir} failed:\n{proc.stderr[-2000:]}")
    return out


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--onnx",
        type=Path,
        action="append",
        help="exported model, float or INT8 (repeatable; default models/default.onnx)",
    )
    p.add_argument(
        "--int8-from",
        type=Path,
        action="append",
        default=[],
        metavar="MODEL_DIR",
        help="also time an INT8 export of this model folder, written for this run (repeatable)",
    )
    p.add_argument(
        "--calibration-images",
        type=Path,
        default=None,
        metavar="DIR",
        help="--int8-from: the folder the model was trained on (default: the one it names)",
    )
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated: onnxruntime,openvino (default: both when OpenVINO is installed, else onnxruntime)",
    )
    p.add_argument(
        "--evaluate",
        type=Path,
        action="append",
        default=[],
        metavar="DATA",
        help="also evaluate every file trained on a folder of this name on this labelled folder",
    )
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every backend")
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
    p.add_argument("--no-folder", action="store_true", help="skip folder scoring")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also split each onnxruntime variant's batch-1 call by operator type (onnxruntime's profiler)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="few calls, small folders: a smoke run, not a measurement")
    a = p.parse_args()
    if a.quick:
        a.runs, a.b8_runs, a.images, a.rounds = 10, 3, [8, 24], 1
    backends = a.backends.split(",") if a.backends else ["onnxruntime"] + (["openvino"] if openvino_installed() else [])
    print(f"machine: {machine()}")
    print(f"command: python bench/speed.py {shlex.join(sys.argv[1:])}\n")
    work = Path(tempfile.mkdtemp(prefix="anomaly-speed-"))
    try:
        files = list(a.onnx or [DEFAULT_ONNX])
        files += [export_int8(m, a.calibration_images, work) for m in a.int8_from]
        variants = [Variant(f, b, *describe_file(f)) for f in files for b in backends]
        short, long = copies(work, a.images[0]), copies(work, a.images[1])
        for _ in range(a.rounds):
            for v in variants:
                med, p99 = latency_ms(v, a.runs, a.threads)
                v.timings["b1"].append(med)
                v.timings["p99"].append(p99)
                v.timings["b8"].append(batch_throughput(v, 8, a.b8_runs, a.threads))
                if not a.no_folder:
                    for key, overlays in (("results_only", False), ("with_overlays", True)):
                        v.timings[key].append(
                            folder_rate(v, short, long, a.images[0], a.images[1], a.threads, work, overlays)
                        )
        profiled = [v for v in variants if v.backend == "onnxruntime"] if a.profile else []
        splits = [kernel_split(v, a.runs, a.threads, work) for v in profiled]
        evaluations = {
            (v.path, v.backend, d): accuracy(v, d, work) for d in a.evaluate for v in variants if v.train_data == d.name
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = {
        v.train_data: float(np.median(v.timings["b1"]))
        for v in reversed(variants)
        if v.backend == "onnxruntime" and v.precision == "fp32"
    }
    print(
        "| model | precision | backend | batch-1 ms (median) | batch-1 ms (p99) | x fp32 | batch-8 images/s | "
        "results only images/s | / raw | with overlays images/s | / raw |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for v in variants:
        b1, b8 = float(np.median(v.timings["b1"])), float(np.median(v.timings["b8"]))
        rows, folder = (
            float(np.median(v.timings[k])) if v.timings[k] else float("nan") for k in ("results_only", "with_overlays")
        )
        ref = base.get(v.train_data)
        speedup = f"{ref / b1:.2f}" if ref else "-"
        print(
            f"| {v.name} | {v.precision} | {v.backend} | {b1:.1f} | {np.median(v.timings['p99']):.1f} | {speedup} | "
            f"{b8:.1f} | {rows:.1f} | {rows / b8:.0%} | {folder:.1f} | {folder / b8:.0%} |"
        )
    if splits:
        print_kernel_split(profiled, splits)
    if evaluations:
        print(
            "\n| model | precision | backend | data | image AUROC | pixel AUROC | AUPRO | F1 shipped |\n"
            "|---|---|---|---|---|---|---|---|"
        )
        for v in variants:
            for d in a.evaluate:
                if (r := evaluations.get((v.path, v.backend, d))) is not None:
                    print(
                        f"| {v.name} | {v.precision} | {v.backend} | {d.name} | {r['image_auroc']:.3f} | "
                        f"{r['pixel_auroc']:.3f} | {r['pixel_aupro']:.3f} | {r['image_f1']:.3f} |"
                    )


if __name__ == "__main__":
    main()
