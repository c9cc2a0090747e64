"""Benchmark `anomaly score --engine ray` against the local scorer on this machine.

    python bench/bench_ray.py [--model models/default.onnx] [--images 200] [--workers 1 2]

Copies the images of --source (default sample_images/washer/test) round-robin into a
temporary folder of --images files, scores it with the local scorer and with the Ray
engine (a fresh local Ray instance per configuration, `workers * threads` CPUs), checks
that every engine wrote the same results.csv, prints one markdown table row per
configuration and writes the report to --out (default bench/results_ray.md).

Ray startup (ray.init) is reported separately; "scoring" counts from the first batch
submitted to the end, so it includes starting the actors and loading the model in each.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anomaly.scoring.local import file_sha256, score_inputs
from anomaly.inspection.imageio import list_images
from anomaly.inspection.inspector import Inspector

DEFAULT_MODEL = ROOT / "models" / "default.onnx"
HEADER = ("| images | engine | workers x threads | Ray startup (s) | scoring (s) | images/s (scoring) "
          "| images/s (incl. startup) | results.csv = local |")
RULE = "| ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_folder(source: Path, n: int, dst: Path) -> Path:
    images = list_images(source)
    if not images:
        raise SystemExit(f"{source}: no images")
    dst.mkdir(parents=True)
    for i in range(n):
        src = images[i % len(images)]
        shutil.copy(src, dst / f"img_{i:05d}{src.suffix.lower()}")
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help=f"ONNX model (default {DEFAULT_MODEL.relative_to(ROOT)})")
    p.add_argument("--source", type=Path, default=ROOT / "sample_images" / "washer" / "test")
    p.add_argument("--images", type=int, nargs="+", default=[200],
                   help="benchmark folder size(s); one folder per value (default 200)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray actor counts to try (default 1 2)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per Ray actor (default 1)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest is reported (default 2)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results_ray.md")
    a = p.parse_args(argv)

    model = a.model
    if model is None:
        if not DEFAULT_MODEL.is_file():
            print(f"{DEFAULT_MODEL} not found: train/export the demo model or pass --model path/to/model.onnx",
                  file=sys.stderr)
            return 2
        model = DEFAULT_MODEL
    elif not DEFAULT_MODEL.is_file():
        print(f"note: {DEFAULT_MODEL} not found; using {model}")

    import onnxruntime
    import ray

    from anomaly.scoring.ray_engine import score_with_ray

    info = Inspector(model).info
    ncpu = os.cpu_count() or 1
    load = os.getloadavg()
    rows: list[str] = []
    print(HEADER)
    print(RULE)

    def emit(cells: list[str]) -> None:
        line = "| " + " | ".join(cells) + " |"
        rows.append(line)
        print(line, flush=True)

    def fastest(run) -> tuple:
        best = None
        for r in range(a.repeat):
            t0 = time.perf_counter()
            summary, out = run(r)
            wall = time.perf_counter() - t0
            if best is None or summary.seconds < best[0].seconds:
                best = (summary, wall, out)
        return best

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = Path(tmp)
        for n in a.images:
            folder = make_folder(a.source, n, tmp / f"images-{n}")
            reference: bytes | None = None
            for name, threads in (("local (threads: all cores)", None), ("local", 1)):
                s, wall, out = fastest(lambda r: (score_inputs(folder, model, tmp / f"local-{n}-{threads}-{r}",
                                                               batch_size=a.batch_size, threads=threads, progress=False),
                                                  tmp / f"local-{n}-{threads}-{r}"))
                csv_bytes = (out / "results.csv").read_bytes()
                reference = reference or csv_bytes
                emit([str(n), name, f"1 x {threads or ncpu}", "-", f"{s.seconds:.1f}", f"{s.scored / s.seconds:.1f}",
                      f"{s.scored / wall:.1f}", "yes" if csv_bytes == reference else "NO"])
            for w in a.workers:
                s, wall, out = fastest(lambda r: (score_with_ray(folder, model, tmp / f"ray-{n}-{w}-{r}",
                                                                 batch_size=a.batch_size, workers=w, threads=a.threads,
                                                                 progress=False),
                                                  tmp / f"ray-{n}-{w}-{r}"))
                same = (out / "results.csv").read_bytes() == reference
                emit([str(n), f"ray (local instance, {w * a.threads} CPUs)", f"{w} x {a.threads}",
                      f"{s.startup_seconds:.1f}", f"{s.seconds:.1f}", f"{s.scored / s.seconds:.1f}",
                      f"{s.scored / wall:.1f}", "yes" if same else "NO"])
            shutil.rmtree(folder)

    command = "python " + " ".join(shlex.quote(x) for x in ([str(Path(sys.argv[0]))] + (argv if argv is not None else sys.argv[1:])))
    report = [
        "## Ray engine vs local scorer (`bench/bench_ray.py`)",
        "",
        f"- command: `{command}`",
        f"- date: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {ncpu} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}, "
        f"ray {ray.__version__}, onnxruntime {onnxruntime.__version__}; load average at start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min; the machine is shared)",
        f"- model: `{model}` ({info.model_kind}, {info.input_size} px, sha256 {file_sha256(model)[:12]})",
        f"- input: {' and '.join(map(str, a.images))} files copied round-robin from `{a.source.relative_to(ROOT) if a.source.is_relative_to(ROOT) else a.source}`, "
        f"batch size {a.batch_size}; fastest of {a.repeat} runs per configuration",
        "- Ray startup = `ray.init` of a fresh local instance; scoring = first batch to last row written "
        "(for Ray: actors starting and loading the model included); incl. startup = images / whole call "
        "(Ray startup, listing, run.json and the final results rewrite included).",
        "",
        HEADER,
        RULE,
        *rows,
        "",
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(report), encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
