"""What reusing freed memory (anomaly/allocator.py) does to the torch side: the frozen
backbone's time per image, page faults and kernel time per batch, and peak memory,
each in a fresh process: glibc's and torch's defaults, torch's 2 MB pages alone
(THP_MEM_ALLOC_ENABLE=1, what importing anomaly sets), and those plus
`keep_freed_memory()` (what training does).

    python bench/allocator.py [--sizes 256,320] [--batches 6] [--out bench/results_allocator.md]

Batch 16 as in training; the first batch is a warm-up and not counted. The features
must come out bit-identical; the script checks that and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from anomaly.training.allocator import keep_freed_memory
kept = keep_freed_memory() if {keep} else False
import torch
from anomaly.config import ModelConfig
from anomaly.training.model import InspectionModule
size, batches = {size}, {batches}
module = InspectionModule(ModelConfig(image_size=size)).eval()
x = torch.rand(16, 3, size, size, generator=torch.Generator().manual_seed(0))
first = module.standardized_features(x)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(batches):
    module.standardized_features(x)
seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
torch.save(first[:2].clone(), {features!r})
print(json.dumps({{"kept": kept, "ms_per_image": 1000 * seconds / (16 * batches),
                  "faults_per_batch": (r1.ru_minflt - r0.ru_minflt) / batches,
                  "kernel_s_per_batch": (r1.ru_stime - r0.ru_stime) / batches,
                  "peak_rss_mb": r1.ru_maxrss / 1024}}))
"""


VARIANTS = {"glibc default": ("0", False), "2 MB pages": ("1", False), "2 MB pages + kept heap": ("1", True)}


def run(size: int, variant: str, batches: int, features: Path) -> dict:
    huge_pages, keep = VARIANTS[variant]
    code = CHILD.format(root=str(ROOT), keep=keep, size=size, batches=batches, features=str(features))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "THP_MEM_ALLOC_ENABLE": huge_pages}).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,320")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2, help="go through the variants this many times")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results_allocator.md")
    a = p.parse_args()
    import torch

    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        for r in range(a.rounds):
            for k, variant in enumerate(VARIANTS):
                f = Path(f"/tmp/anomaly-allocator-{size}-{k}.pt")
                res = run(size, variant, a.batches, f)
                rows.append({"size": size, "round": r + 1, "variant": variant, **res})
                print(rows[-1], flush=True)
        first = torch.load(f"/tmp/anomaly-allocator-{size}-0.pt")
        same = all(torch.equal(first, torch.load(f"/tmp/anomaly-allocator-{size}-{k}.pt")) for k in range(1, len(VARIANTS)))
        rows.append({"size": size, "identical": same})
        print(f"size {size}: features bit-identical: {same}", flush=True)
    lines = ["# Keeping freed memory on the torch side (bench/allocator.py)", "",
             f"- command: `python {shlex.join(sys.argv)}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.machine()}, "
             f"{__import__('os').cpu_count()} cores; torch {torch.__version__}; {platform.libc_ver()[0]} {platform.libc_ver()[1]}",
             "- frozen backbone (`standardized_features`), batch 16, each row a fresh process", "",
             "| working size | round | allocator | ms per image | page faults per batch | kernel s per batch | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "identical" in r:
            continue
        lines.append(f"| {r['size']} | {r['round']} | {r['variant']} | "
                     f"{r['ms_per_image']:.1f} | {r['faults_per_batch']:.0f} | {r['kernel_s_per_batch']:.2f} | {r['peak_rss_mb']:.0f} |")
    lines.append("")
    for r in rows:
        if "identical" in r:
            lines.append(f"- working size {r['size']}: features bit-identical in all three: {r['identical']}")
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
