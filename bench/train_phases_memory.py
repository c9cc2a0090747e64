"""Resident memory of each phase of training, saving, export and evaluation.

    python bench/train_phases_memory.py DATA [--image-size 256] [--epochs 80] [--max-train-images N] [--name NAME]

Runs what bench/bottle.py runs (fit, save, ONNX export, evaluation with onnxruntime) in
this process and reads the kernel's own peak resident set size (VmHWM, reset through
/proc/self/clear_refs at every phase change, so short spikes are not missed). Each phase
is named after the training function that is running (or has just returned: "after
build_feature_bank" is the epoch loop), so the table shows where memory peaks and what
is still held when the next phase starts. Run it with `THP_MEM_ALLOC_ENABLE=0` in
the environment to see the process without the kept heap (anomaly/allocator.py). Appends
the table to bench/results_train_phases_memory.md. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results_train_phases_memory.md"
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_MB


def peak_mb() -> float:
    """The kernel's own peak RSS (VmHWM) since the last reset_peak(): exact, unlike sampling."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS to the current RSS
        f.write("5")


class PhaseMemory:
    """Peak and last RSS per phase, phases in the order they first ran."""

    def __init__(self) -> None:
        self.phase = "start"
        self.peak: dict[str, float] = {}
        self.entered: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._since = time.perf_counter()

    def sample(self) -> None:
        phase, mb = self.phase, peak_mb()
        self.peak[phase] = max(self.peak.get(phase, 0.0), mb)

    def enter(self, phase: str) -> None:
        self.sample()
        now = time.perf_counter()
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + now - self._since
        self._since = now
        self.phase = phase
        self.entered.setdefault(phase, rss_mb())
        reset_peak()
        self.sample()

    def __enter__(self) -> "PhaseMemory":
        reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        self.enter("end")


def watch(module: object, name: str, sampler: PhaseMemory) -> None:
    """Replace module.name with a wrapper that names the phase while it runs."""
    original = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        sampler.enter(name)
        try:
            return original(*args, **kwargs)
        finally:
            sampler.enter(f"after {name}")

    setattr(module, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--max-train-images", type=int, default=None, help="TrainConfig.max_train_images (default: its default)")
    ap.add_argument("--name", default="")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-phases"))
    a = ap.parse_args()

    import anomaly.training.fit as train_module
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector
    from anomaly.evaluation.evaluate import evaluate
    from anomaly.training.export import export_onnx
    from anomaly.inspection.inspector import Inspector

    out = a.workdir / (a.name or f"size{a.image_size}-{a.epochs}ep")
    with PhaseMemory() as s:
        for name in ("feature_statistics", "build_feature_bank", "_features_of", "train_segmentation_head",
                     "fill_patch_memory", "greedy_coreset"):
            watch(train_module, name, s)
        for name in ("calibrate", "calibrate_with_synthetic"):
            watch(Detector, name, s)
        tc = TrainConfig(epochs=a.epochs)
        if a.max_train_images is not None:
            tc.max_train_images = a.max_train_images
        s.enter("reading images")
        det = Detector(ModelConfig(image_size=a.image_size), tc).fit(a.data, progress=False)
        s.enter("save")
        det.save(out)
        s.enter("export")
        onnx_path = export_onnx(det, out / "model.onnx")
        s.enter("evaluate")
        result = evaluate(Inspector(onnx_path), a.data, eval_size=a.image_size, progress=False)

    env = os.environ.get("THP_MEM_ALLOC_ENABLE")
    command = ("THP_MEM_ALLOC_ENABLE=" + env + " " if env is not None else "") + "python " + " ".join(sys.argv)
    lines = [
        f"\n## {out.name}: `{command}`",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} {os.cpu_count()} cores; "
        f"image AUROC {result['image_auroc']:.4f}, pixel AUROC {result['pixel_auroc']:.4f}, "
        f"AUPRO {result['pixel_aupro']:.4f}, epochs run {det.summary['epochs_run']}; "
        f"{det.summary['train_count']} of {det.summary['train_available']} good images trained on, "
        f"{det.summary['holdout_count']} held out",
        "",
        "| phase | seconds | RSS at start (MB) | peak RSS (MB) |",
        "|---|---|---|---|",
    ]
    for phase, peak in s.peak.items():
        start = s.entered.get(phase, float("nan"))
        lines.append(f"| {phase} | {s.seconds.get(phase, 0.0):.1f} | {start:.0f} | {peak:.0f} |")
    lines.append(f"\nWhole run: peak RSS {max(s.peak.values()):.0f} MB.")
    text = "\n".join(lines)
    print(text)
    with OUT.open("a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
