"""Install footprint and cold start: what a line PC pays for the runtime.

    python bench/install.py                 build a fresh line-PC venv (EXTRAS= ./setup.sh) and measure it
    python bench/install.py --venv DIR      measure an existing venv
    python bench/install.py --quick         measure the venv running this script, 3 cold starts

Reports the venv's size on disk (as `du` counts it), whether a package the runtime does
not need is installed (torch, scipy, scikit-image, CUDA wheels), and the cold start to
the first verdict: a fresh process that imports the runtime, loads the bundled model and
inspects one sample image, timed from spawn to exit (interpreter start included), with
its peak memory. Targets (issue 29): <= 360 MiB, <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_ONNX, ROOT, SAMPLES, machine  # noqa: E402

SIZE_TARGET_MIB = 360
COLD_TARGET_S = 0.5
IMAGE = SAMPLES / "test" / "crack" / "000.png"
# distributions a line-PC install should not carry
UNNEEDED = ("torch", "scipy", "scikit-image", "matplotlib", "streamlit", "ray")

FIRST_VERDICT = """
import sys
from anomaly.inspection.inspector import Inspector
verdict = Inspector(sys.argv[1]).inspect(sys.argv[2]).verdict
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'scipy', 'skimage', 'matplotlib', 'pandas'})
print(verdict, ','.join(heavy) or '-')
"""

LIST_DISTS = """
import json
from importlib.metadata import distributions
print(json.dumps(sorted({(d.metadata['Name'] or '?').lower() for d in distributions()})))
"""


def du_mib(path: Path) -> float:
    """Disk usage as `du -s` counts it (allocated blocks, each hard-linked file once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return (total + os.lstat(path).st_blocks * 512) / 2**20


def cold_starts(python: Path, runs: int) -> tuple[list[float], float, str, str]:
    """(seconds per fresh process, peak RSS MiB over them, verdict, heavy modules loaded)."""
    times, verdict, heavy = [], "", ""
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(
            [str(python), "-c", FIRST_VERDICT, str(DEFAULT_ONNX), str(IMAGE)],
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"cold start failed:\n{proc.stderr[-2000:]}")
        verdict, heavy = proc.stdout.split()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return times, peak, verdict, heavy


def build_slim(venv: Path) -> float:
    """A line-PC venv made the documented way (`EXTRAS= ./setup.sh`); seconds taken."""
    start = time.perf_counter()
    env = dict(os.environ, EXTRAS="", VENV=str(venv), PYTHON=os.environ.get("PYTHON", "python3"))
    subprocess.run([str(ROOT / "setup.sh")], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, help="measure this venv instead of building a fresh line-PC one")
    ap.add_argument("--quick", action="store_true", help="measure the running venv, 3 cold starts")
    ap.add_argument("--runs", type=int, default=10, help="cold starts to time (default 10; --quick: 3)")
    ap.add_argument("--keep", action="store_true", help="keep the venv built for the measurement")
    a = ap.parse_args()

    built, setup_s = None, None
    if a.quick:
        venv, runs = Path(sys.prefix), 3
    elif a.venv:
        venv, runs = a.venv, a.runs
    else:
        built = Path(tempfile.mkdtemp(prefix="anomaly-slim-")) / "venv"
        setup_s = build_slim(built)
        venv, runs = built, a.runs
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{venv}: not a venv (no bin/python)")
    try:
        size = du_mib(venv)
        dists = json.loads(
            subprocess.run([str(python), "-c", LIST_DISTS], capture_output=True, text=True, check=True).stdout
        )
        extra = [d for d in dists if d in UNNEEDED or d.startswith("nvidia-")]
        times, peak, verdict, heavy = cold_starts(python, runs)
    finally:
        if built is not None and not a.keep:
            shutil.rmtree(built.parent, ignore_errors=True)

    median = statistics.median(times)
    print(f"machine: {machine()}")
    print(f"cold start: {DEFAULT_ONNX.relative_to(ROOT)} on {IMAGE.relative_to(ROOT)}, {runs} fresh processes")
    if setup_s is not None:
        print(f"set-up (EXTRAS= ./setup.sh, fresh venv): {setup_s:.1f} s")
    print()
    print(
        "| venv | size MiB | packages | not needed by the runtime | cold start median s | min s | max s "
        "| peak MiB | verdict | heavy imports |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    label = "fresh line-PC venv" if built is not None else str(venv)
    print(
        f"| {label} | {size:.0f} | {len(dists)} | {', '.join(extra) or '-'} | {median:.3f} | {min(times):.3f} "
        f"| {max(times):.3f} | {peak:.0f} | {verdict} | {heavy} |"
    )
    print()
    print(
        f"targets: size <= {SIZE_TARGET_MIB} MiB: {'met' if size <= SIZE_TARGET_MIB else 'MISSED'}; "
        f"cold start <= {COLD_TARGET_S} s: {'met' if median <= COLD_TARGET_S else 'MISSED'}"
        + (" (a full dev venv is not the line-PC install; its size is shown for information)" if a.quick else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
