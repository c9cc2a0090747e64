"""Helpers shared by the benchmark scripts: the machine, timing, the CLI, quick data.

The scripts use only the public API: the `anomaly` command line, `Inspector`,
`Detector` and `anomaly.evaluation.evaluate.evaluate`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"  # real data, never copied into the repository
SAMPLES = ROOT / "sample_images" / "washer"
DEFAULT_ONNX = ROOT / "models" / "default.onnx"
# --quick: small enough to train in seconds on the bundled samples; its figures mean nothing
QUICK_TRAIN = [
    "--image-size",
    "64",
    "--epochs",
    "1",
    "--head-epochs",
    "1",
    "--memory-size",
    "128",
    "--max-train-images",
    "16",
]


def machine() -> str:
    """One line naming the machine, to print above every result."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    import onnxruntime

    return (
        f"{cpu}, {cores} cores, {mem:.0f} GiB, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, load average {load}"
    )


def timed_calls(fn: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    """Seconds per call of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out


def batch1_latency_ms(onnx_path: Path, runs: int = 60, threads: int = 2) -> tuple[float, float]:
    """Median and p99 of one raw model call at batch 1 (a working-size square), in ms."""
    from anomaly.inspection.inspector import Inspector

    insp = Inspector(onnx_path, threads=threads)
    size = insp.info.grid[0]
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    t = timed_calls(lambda: insp.run(x), runs, warmup=5) * 1e3
    return float(np.median(t)), float(np.percentile(t, 99))


def anomaly_cli(*args: str | Path, env: dict[str, str] | None = None, check: bool = True) -> tuple[int, float, float]:
    """Run `python -m anomaly ARGS` in a child process: (exit code, wall seconds, the
    child's peak resident memory in MB)."""
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "anomaly", *map(str, args)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if check and code != 0:
            err.seek(0)
            sys.exit(f"error: anomaly {' '.join(map(str, args))} exited {code}:\n{err.read()[-2000:]}")
    return code, seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def categories(root: Path) -> list[Path]:
    """MVTec-style category folders (with train/good) under `root`, by name."""
    return sorted(p for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []
