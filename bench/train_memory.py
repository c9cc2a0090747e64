"""Peak memory of `anomaly train` on a folder of large photos.

    python bench/train_memory.py [--count 100] [--size 2448x2048] [--epochs 2] [--code PATH]

Writes `--count` good images of `--size` (the demo washers, enlarged, with sensor noise,
as JPEG) to `--workdir`, once, then runs `anomaly train` on them in a child process and
reports the child's peak resident memory (ru_maxrss) and wall time. `--code` runs the
package from another checkout (e.g. a `git worktree` of an older commit) to compare.
Few epochs: the training loop's own memory does not grow with the photos' size, what is
measured is how the images are read and brought to the working size. Appends a row to
bench/results_train_memory.md. The photos stay in the work folder, never in the repo.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results_train_memory.md"
SOURCE = ROOT / "sample_images" / "washer" / "train" / "good"


def make_photos(folder: Path, count: int, width: int, height: int) -> None:
    """Enlarged demo washers with per-image noise, so no two files are alike."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == count:
        return
    sources = sorted(SOURCE.glob("*.png"))
    rng = np.random.default_rng(0)
    for i in range(count):
        img = cv2.imread(str(sources[i % len(sources)]), cv2.IMREAD_COLOR)
        big = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        big += rng.integers(-3, 4, big.shape, dtype=np.int16)
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), np.clip(big, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])


def git_rev(path: Path) -> str:
    """The checkout's commit, marked when its anomaly/ has uncommitted changes."""
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "anomaly"], capture_output=True, text=True)
    return (out.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty.stdout.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--size", default="2448x2048", help="WIDTHxHEIGHT of the photos")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose anomaly package is run")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-train-memory"))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    data = args.workdir / f"photos-{args.count}-{width}x{height}"
    make_photos(data / "train" / "good", args.count, width, height)

    code = args.code.resolve()
    child = ("import sys, anomaly; print('package:', anomaly.__file__, flush=True); "
             "from anomaly.cli import main; sys.argv = ['anomaly'] + sys.argv[1:]; main()")
    cmd = [sys.executable, "-c", child, "train", str(data), "--out", str(args.workdir / "model"),
           "--epochs", str(args.epochs), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(code))
    revision = git_rev(code)  # before the run: the child imports the package as it is now
    start = time.perf_counter()
    run = subprocess.run(cmd, env=env, cwd=code, capture_output=True, text=True)  # "-c" puts the cwd first on sys.path
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    package = next((line for line in run.stdout.splitlines() if line.startswith("package:")), "package: ?")
    print(package)
    if run.returncode != 0:
        sys.exit(f"anomaly train failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    if not package.endswith(str(code / "anomaly" / "__init__.py")):
        sys.exit(f"the child ran another package than {code}: {package}")
    raw_gb = args.count * width * height * 3 * 4 / 1024**3
    row = (f"| {datetime.now(timezone.utc):%Y-%m-%d %H:%M} | {revision} | {args.count} x {width}x{height} "
           f"({raw_gb:.1f} GiB as float images) | {args.epochs} | {peak_gb:.2f} | {seconds:.0f} | "
           f"`python bench/train_memory.py --count {args.count} --size {width}x{height} --epochs {args.epochs}"
           f"{'' if code == ROOT else ' --code ' + str(args.code)}` |")
    print(f"peak resident memory {peak_gb:.2f} GiB, {seconds:.0f} s")
    if not OUT.exists():
        OUT.write_text("# Peak memory of `anomaly train` on large photos (bench/train_memory.py)\n\n"
                       f"Machine: {platform.machine()}, {os.cpu_count()} cores.\n\n"
                       "| date (UTC) | code | photos | epochs | peak RSS, GiB | wall s | command |\n"
                       "|---|---|---|---|---|---|---|\n")
    with OUT.open("a") as f:
        f.write(row + "\n")


if __name__ == "__main__":
    main()
