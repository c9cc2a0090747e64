"""Inference speed of an exported model: ONNX Runtime vs torch eager, end-to-end folder
scoring vs the raw model, FLOPs and how much of the CPU the model uses.

    python bench/bench_speed.py [--model-dir models/default] [--onnx models/default.onnx]
                                [--runs 100] [--threads 2] [--quick]

Measures (all on CPU, `--threads` intra-op threads, 256x256 for the default model):

1. ONNX Runtime batch-1 latency (`Inspector.run`, the raw session call): median and p99
   over `--runs` timed calls after `--warmup` untimed ones.
2. Batch-8 throughput: images/s from the median time of `--b8-runs` batch-8 calls.
3. End-to-end folder scoring (`anomaly.scoring.local.score_inputs`, decode + inference + regions +
   overlays + fsynced results) on copies of sample_images/washer/test/**/*.png, vs the raw
   batch-8 model throughput measured right before and after each scoring run; plus a
   single-threaded per-image cost of each pipeline stage to show where the time goes.
4. The same `InspectionModule` in torch eager (`torch.set_num_threads`,
   `torch.inference_mode()`), batch 1 and batch 8, and the ORT speed-up over torch.
5. FLOPs per image counted from the ONNX graph (Conv/ConvTranspose/MatMul/Gemm MACs x 2,
   shapes from `onnx.shape_inference.infer_shapes` with the batch fixed to 1), cross-checked
   with `torch.utils.flop_counter.FlopCounterMode` on the module; the machine's float32
   matmul rate (torch 1024x1024, same thread count); the model's GFLOP/s and its fraction
   of that matmul rate.
6. Session-option experiments (graph optimisation level, threads, execution mode, an
   ORT-optimised saved model) and other model files (`--compare-onnx`), timed interleaved round-robin against the baseline and an
   A/A copy of the baseline (the noise floor), with session-creation time, node counts of
   the optimised graphs and the output difference to the baseline.

Prints a markdown report and writes it to bench/results_speed.md (`--out`). `--quick`
uses small repeat counts for a smoke run: its numbers are indicative only.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from anomaly.scoring.local import collect_inputs, load_input, score_inputs, write_overlays
from anomaly.inspection.imageio import per_image, read_image, to_batch
from anomaly.inspection.regions import defect_mask, find_regions
from anomaly.inspection.inspector import Inspection, Inspector, _session_options

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results_speed.md"
SAMPLES = ROOT / "sample_images" / "washer" / "test"
TARGET_E2E_RATIO = 0.80


# ----- helpers ------------------------------------------------------------------------
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


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int, chunk: int = 10,
                discard: int = 2) -> dict[str, np.ndarray]:
    """Time several variants round-robin in chunks of `chunk` calls so that a change of the
    background load hits all of them alike; `discard` untimed calls start every chunk
    (the previous variant's worker threads may still be spinning)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    while any(len(v) < runs for v in times.values()):
        for name, fn in fns.items():
            n = min(chunk, runs - len(times[name]))
            if n <= 0:
                continue
            times[name].extend(timed_calls(fn, n, discard))
    return {k: np.asarray(v) for k, v in times.items()}


def ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def stats(t: np.ndarray) -> tuple[float, float]:
    return float(np.median(t)), float(np.percentile(t, 99))


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_session(path: Path, opts: ort.SessionOptions) -> tuple[ort.InferenceSession, float]:
    t = time.perf_counter()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess, time.perf_counter() - t


def options(threads: int, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            parallel: bool = False, save_to: Path | None = None) -> ort.SessionOptions:
    opts = _session_options(threads)  # what Inspector uses: ENABLE_ALL, intra-op threads
    opts.graph_optimization_level = level
    if parallel:
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        opts.inter_op_num_threads = threads
    if save_to is not None:
        opts.optimized_model_filepath = str(save_to)
    return opts


def op_counts(path: Path) -> collections.Counter:
    """Node counts by op type, prefixed with the domain when it is not the ONNX one."""
    return collections.Counter((f"{n.domain.rsplit('.', 1)[-1]}:" if n.domain not in ("", "ai.onnx") else "") + n.op_type
                               for n in onnx.load(str(path)).graph.node)


def sample_images(n: int) -> list[np.ndarray]:
    paths = sorted(SAMPLES.rglob("*.png"))
    if not paths:
        sys.exit(f"no sample images under {SAMPLES}")
    return [read_image(paths[i % len(paths)]) for i in range(n)]


# ----- FLOPs --------------------------------------------------------------------------
def onnx_flops(path: Path) -> tuple[float, dict[str, float]]:
    """FLOPs per image (2 x MACs of Conv, ConvTranspose, MatMul, Gemm) from the graph with
    the batch axis fixed to 1. Element-wise ops, pooling, Resize and reductions are not
    counted (they are memory-bound and small next to the convolutions)."""
    model = onnx.load(str(path))
    g = model.graph
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del g.value_info[:]  # drop the exporter's symbolic shapes; infer them again at batch 1
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)

    def shape(name: str) -> list[int]:
        s = shapes.get(name)
        if s is None or any(d <= 0 for d in s):
            raise RuntimeError(f"{path}: no static shape for {name!r} at batch 1")
        return s

    per_op: dict[str, float] = collections.defaultdict(float)
    for node in inferred.graph.node:
        op = node.op_type
        if op == "Conv":  # weight (Cout, Cin/g, kh, kw): MACs = |out| * Cin/g * kh * kw
            macs = np.prod(shape(node.output[0])) * np.prod(shape(node.input[1])[1:])
        elif op == "ConvTranspose":  # weight (Cin, Cout/g, kh, kw): MACs = |in| * Cout/g * kh * kw
            macs = np.prod(shape(node.input[0])) * np.prod(shape(node.input[1])[1:])
        elif op == "MatMul":
            macs = np.prod(shape(node.output[0])) * shape(node.input[0])[-1]
        elif op == "Gemm":
            a = shape(node.input[0])
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            macs = np.prod(shape(node.output[0])) * (a[0] if trans_a else a[1])
        else:
            continue
        per_op[op] += 2.0 * float(macs)
    return sum(per_op.values()), dict(per_op)


def torch_flops(module, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(torch.rand(1, 3, size, size))
    return float(counter.get_total_flops())


def matmul_call(threads: int, n: int = 1024) -> Callable[[], object]:
    """One n x n float32 torch matmul on `threads` threads (2 n^3 FLOPs)."""
    import torch

    a, b = torch.rand(n, n), torch.rand(n, n)

    def call() -> object:
        torch.set_num_threads(threads)
        return torch.mm(a, b)
    return call


# ----- the benchmark ------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "models" / "default", help="torch model folder")
    p.add_argument("--onnx", type=Path, default=ROOT / "models" / "default.onnx", help="the same model exported")
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 calls per measurement")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--b8-runs", type=int, default=20, help="timed batch-8 calls per throughput measurement")
    p.add_argument("--batch", type=int, default=8, help="batch size of the throughput and folder runs")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (ORT and torch)")
    p.add_argument("--images", type=int, default=128, help="images in the short folder-scoring run (samples repeated)")
    p.add_argument("--long-images", type=int, default=512,
                   help="images in the long run (the two runs separate fixed start-up costs from the steady rate)")
    p.add_argument("--e2e-repeats", type=int, default=5, help="folder-scoring runs (median reported)")
    p.add_argument("--compare-onnx", type=Path, action="append", default=[],
                   help="another ONNX file of the same input size, timed in section 6 against the baseline "
                        "(e.g. the same model with a different search); repeatable")
    p.add_argument("--quick", action="store_true", help="small repeat counts: a smoke run, not a measurement")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    if a.quick:
        a.runs, a.warmup, a.b8_runs, a.images, a.e2e_repeats = min(a.runs, 20), min(a.warmup, 3), min(a.b8_runs, 5), min(a.images, 48), 1
        a.long_images = min(a.long_images, 96)
    matmul_reps = 10 if a.quick else 50
    create_reps = 3 if a.quick else 7
    cmd = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    load_start = loadavg()
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    t_start = time.perf_counter()

    import torch

    torch.set_num_threads(a.threads)
    from anomaly.training.detector import Detector

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # inputs: real sample images, fitted exactly as at inference
    insp = Inspector(a.onnx, threads=a.threads)
    size, fit_mode, tiles = insp.info.grid
    imgs = sample_images(max(a.batch, 8))
    x1, _ = to_batch(imgs[:1], size, fit_mode, tiles)
    xb, _ = to_batch(imgs[: a.batch], size, fit_mode, tiles)

    # 1. ORT batch-1 latency
    log("1. ORT batch-1 latency")
    t_ort1 = timed_calls(lambda: insp.run(x1), a.runs, a.warmup)
    ort1_med, ort1_p99 = stats(t_ort1)

    # 2. ORT batch-N throughput
    log(f"2. ORT batch-{a.batch} throughput")
    t_ortb = timed_calls(lambda: insp.run(xb), a.b8_runs, max(2, a.warmup // 3))
    ortb_ips = a.batch / float(np.median(t_ortb))

    # 3. end-to-end folder scoring vs the raw model at the same batch size
    log(f"3. folder scoring ({a.images} and {a.long_images} images, overlays) x{a.e2e_repeats}")
    work = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    try:
        src = sorted(SAMPLES.rglob("*.png"))

        def make_folder(name: str, n: int) -> Path:
            folder = work / name
            for i in range(n):
                f = src[i % len(src)]
                dst = folder / f"rep{i // len(src):02d}" / f.relative_to(SAMPLES)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst)
            return folder

        folders = {a.images: make_folder("short", a.images), a.long_images: make_folder("long", a.long_images)}
        folder = folders[a.images]
        # per folder size: images/s of each run, its seconds, raw images/s timed around it
        e2e: dict[int, dict[str, list[float]]] = {n: {"ips": [], "seconds": [], "wall_ips": [], "raw": []} for n in folders}
        raw_calls = max(3, min(10, a.images // a.batch))
        for r in range(a.e2e_repeats):
            for n, fold in folders.items():
                before = a.batch / float(np.median(timed_calls(lambda: insp.run(xb), raw_calls, 1)))
                t = time.perf_counter()
                summary = score_inputs(fold, a.onnx, work / f"out{r}", overlays=True, batch_size=a.batch,
                                       threads=a.threads, progress=False)
                wall = time.perf_counter() - t
                after = a.batch / float(np.median(timed_calls(lambda: insp.run(xb), raw_calls, 1)))
                if summary.scored != n or summary.errors:
                    sys.exit(f"folder scoring scored {summary.scored}/{n} images with {summary.errors} errors")
                e2e[n]["ips"].append(summary.images_per_second)
                e2e[n]["seconds"].append(summary.seconds)
                e2e[n]["wall_ips"].append(n / wall)
                e2e[n]["raw"].append((before + after) / 2)
                shutil.rmtree(work / f"out{r}", ignore_errors=True)
        e2e_1thread = None
        if a.threads > 1:  # the pipeline's decode/overlay threads compete with the inference threads
            e2e_1thread = score_inputs(folder, a.onnx, work / "out_1", overlays=True, batch_size=a.batch, threads=1,
                                       progress=False).images_per_second
        short, long = e2e[a.images], e2e[a.long_images]
        e2e_med = float(np.median(short["ips"]))
        raw_med = float(np.median(short["raw"]))
        long_med, long_raw = float(np.median(long["ips"])), float(np.median(long["raw"]))
        # seconds = fixed + images / steady rate, from the two sizes' median times
        t_short, t_long = float(np.median(short["seconds"])), float(np.median(long["seconds"]))
        steady = (a.long_images - a.images) / (t_long - t_short) if t_long > t_short else float("nan")
        fixed = t_short - a.images / steady

        # where the time goes: each stage alone, single-threaded, per image
        log("3b. per-stage costs")
        items = collect_inputs(folder)[: 2 * a.batch]
        it, pt = insp.image_threshold, insp.pixel_threshold
        stage: dict[str, float] = {}
        t = time.perf_counter()
        loaded = [load_input(x) for x in items]
        stage["decode (read_image)"] = (time.perf_counter() - t) / len(items)
        ims = [x.image for x in loaded]
        t = time.perf_counter()
        batches = [to_batch(ims[i : i + a.batch], size, fit_mode, tiles) for i in range(0, len(ims), a.batch)]
        stage["fit + batch (to_batch)"] = (time.perf_counter() - t) / len(items)
        t = time.perf_counter()
        outs = [insp.run(bt)[0] for bt, _ in batches]
        stage[f"model (Inspector.run, batch {a.batch}, {a.threads} threads)"] = (time.perf_counter() - t) / len(items)
        t = time.perf_counter()
        results = []
        for (_, pls), out in zip(batches, outs):
            for views, pl in zip(per_image(out, pls), pls):
                content = pl.content(views)
                s = float(content.max())
                hm = pl.original(content)
                mask = defect_mask(hm, it, pt)
                results.append(Inspection(s, it, pt, hm, mask, find_regions(hm, mask)))
        stage["post (map back, mask, regions)"] = (time.perf_counter() - t) / len(items)
        t = time.perf_counter()
        for im, res in zip(ims, results):
            res.overlay(im)
        compose = (time.perf_counter() - t) / len(items)
        stage["overlay composed (Inspection.overlay)"] = compose
        t = time.perf_counter()
        for x, im, res in zip(items, ims, results):
            write_overlays(work / "stages", x.label, im, res)
        stage["overlay + mask PNG encode and write"] = max(0.0, (time.perf_counter() - t) / len(items) - compose)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # 4. torch eager, the same module
    log("4. torch eager")
    det = Detector.load(a.model_dir)
    module = det.module.eval()
    torch.set_num_threads(a.threads)
    tx1, txb = torch.from_numpy(x1), torch.from_numpy(xb)

    def torch_call(x: torch.Tensor, threads: int) -> Callable[[], object]:
        def call() -> object:
            torch.set_num_threads(threads)
            return module(x)
        return call

    with torch.inference_mode():
        # interleaved with ORT so that a change of background load hits both alike
        cmp1 = interleaved({"ort": lambda: insp.run(x1), "torch": torch_call(tx1, a.threads),
                            "torch1": torch_call(tx1, 1)}, a.runs, a.warmup)
        cmpb = interleaved({"ort": lambda: insp.run(xb), "torch": torch_call(txb, a.threads)},
                           a.b8_runs, max(2, a.warmup // 3), chunk=5, discard=1)
        torch.set_num_threads(a.threads)
        ref_map = module(txb)[0].numpy()[:, 0]
    torch1_med, torch1_p99 = stats(cmp1["torch"])
    torch1t_med, torch1t_p99 = stats(cmp1["torch1"])
    ortc1_med, ortc1_p99 = stats(cmp1["ort"])
    torchb_ips = a.batch / float(np.median(cmpb["torch"]))
    ortcb_ips = a.batch / float(np.median(cmpb["ort"]))
    parity = float(np.abs(insp.run(xb)[0] - ref_map).max())

    # 5. FLOPs and the machine's matmul rate
    log("5. FLOPs + matmul rate")
    flops, flops_by_op = onnx_flops(a.onnx)
    flops_torch = torch_flops(module, size)
    # the matmul interleaved with the model's calls, so both see the same background load
    u = interleaved({"mm": matmul_call(a.threads), "ort1": lambda: insp.run(x1)}, matmul_reps, 3, chunk=5)
    ub = interleaved({"mm": matmul_call(a.threads), "ortb": lambda: insp.run(xb)}, max(3, matmul_reps // 4), 2,
                     chunk=3, discard=1)
    torch.set_num_threads(a.threads)
    mm_t = np.concatenate([u["mm"], ub["mm"]])
    mm_med, mm_best = 2.0 * 1024**3 / float(np.median(mm_t)) / 1e9, 2.0 * 1024**3 / float(mm_t.min()) / 1e9
    model_gflops_b1 = flops / float(np.median(u["ort1"])) / 1e9
    model_gflops_b1_best = flops / float(u["ort1"].min()) / 1e9
    model_gflops_b8 = flops * a.batch / float(np.median(ub["ortb"])) / 1e9
    model_gflops_b8_best = flops * a.batch / float(ub["ortb"].min()) / 1e9

    # 6. session-option experiments, interleaved with the baseline and an A/A copy of it
    log("6. session-option experiments")
    tmp = Path(tempfile.mkdtemp(prefix="bench_speed_ort_"))
    try:
        L = ort.GraphOptimizationLevel
        node_counts: dict[str, collections.Counter] = {}
        for name, level in (("BASIC", L.ORT_ENABLE_BASIC), ("EXTENDED", L.ORT_ENABLE_EXTENDED), ("ALL", L.ORT_ENABLE_ALL)):
            make_session(a.onnx, options(a.threads, level, save_to=tmp / f"{name}.onnx"))
            node_counts[name] = op_counts(tmp / f"{name}.onnx")
        node_counts["original"] = op_counts(a.onnx)
        variants = {
            "baseline: ENABLE_ALL, 2 threads, sequential": (a.onnx, options(a.threads)),
            "baseline again (A/A control)": (a.onnx, options(a.threads)),
            "ORT_ENABLE_BASIC": (a.onnx, options(a.threads, L.ORT_ENABLE_BASIC)),
            "ORT_ENABLE_EXTENDED (no NCHWc layout)": (a.onnx, options(a.threads, L.ORT_ENABLE_EXTENDED)),
            "ORT_DISABLE_ALL (reference)": (a.onnx, options(a.threads, L.ORT_DISABLE_ALL)),
            "1 intra-op thread": (a.onnx, options(1)),
            "execution_mode ORT_PARALLEL (inter-op 2)": (a.onnx, options(a.threads, parallel=True)),
            "saved ORT-optimised model, loaded with DISABLE_ALL": (tmp / "ALL.onnx", options(a.threads, L.ORT_DISABLE_ALL)),
        }
        if a.threads != 2:
            variants = {k.replace("2 threads", f"{a.threads} threads"): v for k, v in variants.items()}
        for other in a.compare_onnx:
            variants[f"other model: {other.name}"] = (other, options(a.threads))
        creates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(create_reps):  # round-robin, like the latencies
            for name, (path, opts) in variants.items():
                creates[name].append(make_session(path, opts)[1])
        create_s = {k: float(np.median(v)) for k, v in creates.items()}
        sessions, fns = {}, {}
        for name, (path, opts) in variants.items():
            sess, _ = make_session(path, opts)
            sessions[name] = sess
            inp = sess.get_inputs()[0].name
            fns[name] = (lambda s=sess, i=inp: s.run(None, {i: x1}))
        exp_times = interleaved(fns, a.runs, a.warmup, chunk=10 if not a.quick else 5)
        base_name = next(iter(variants))
        base_out = sessions[base_name].run(None, {sessions[base_name].get_inputs()[0].name: xb})[0]
        diffs = {n: float(np.abs(s.run(None, {s.get_inputs()[0].name: xb})[0] - base_out).max()) for n, s in sessions.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = loadavg()
    log("done")

    # ----- report -----------------------------------------------------------------------
    base_med = float(np.median(exp_times[base_name]))
    aa_name = list(variants)[1]
    noise = abs(float(np.median(exp_times[aa_name])) / base_med - 1)
    threshold = max(0.05, 2 * noise)

    def moved(name: str) -> str:
        if name == base_name:
            return "reference"
        med = float(np.median(exp_times[name]))
        rel = med / base_med - 1
        what = f"{rel:+.0%} latency"
        if name == aa_name:
            return f"{what}: the noise floor of this run"
        what = ("no change (within noise, |Δ| < " f"{threshold:.0%})") if abs(rel) < threshold else (
            f"{'slower' if rel > 0 else 'faster'}, {what}")
        c, cb = create_s[name], create_s[base_name]
        if c < 0.5 * cb or c > 2 * cb:
            what += f"; session creation {c * 1e3:.0f} ms vs {cb * 1e3:.0f} ms"
        if diffs[name] > 0:
            why = "another model" if name.startswith("other model") else "other kernels"
            what += f"; outputs differ by up to {diffs[name]:.0e} ({why})"
        return what

    def nodes(c: collections.Counter) -> str:
        return f"{sum(c.values())} nodes (" + ", ".join(f"{k} {v}" for k, v in c.most_common(6)) + ")"

    ratio = e2e_med / raw_med
    run_ratios = [e / r for e, r in zip(short["ips"], short["raw"])]
    lines = [
        "# Inference speed",
        "",
        f"- command: `{cmd}`",
        f"- date: {started}",
        f"- machine: nproc {cpu_count()}, {cpu_model()}; {platform.platform()}",
        f"- load average (1/5/15 min) at start {load_start}, at end {load_end}"
        + ("  **(other work was running: timings disturbed)**" if float(load_start.split()[0]) > 0.5 * cpu_count() else ""),
        f"- onnxruntime {ort.__version__}, torch {torch.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}",
        f"- model: `{os.path.relpath(a.onnx, ROOT)}` ({insp.info.model_kind}, {size}x{size}, "
        f"{a.onnx.stat().st_size / 1e6:.1f} MB) and `{os.path.relpath(a.model_dir, ROOT)}` for torch",
        f"- threads: {a.threads} intra-op (ORT `intra_op_num_threads`, `torch.set_num_threads`)",
    ]
    if a.quick:
        lines.append(f"- **--quick**: {a.runs} runs, {a.warmup} warm-up, {a.b8_runs} batch-{a.batch} calls, "
                     f"{a.images} images x {a.e2e_repeats}: a smoke run, not a measurement")
    lines += [
        "",
        "## 1-2. ONNX Runtime",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| batch-1 latency, median ({a.runs} runs after {a.warmup} warm-up) | {ms(ort1_med)} ms |",
        f"| batch-1 latency, p99 | {ms(ort1_p99)} ms |",
        f"| batch-1 latency, min / max | {ms(t_ort1.min())} / {ms(t_ort1.max())} ms |",
        f"| batch-{a.batch} throughput (median of {a.b8_runs} calls) | {ortb_ips:.1f} images/s "
        f"({ms(float(np.median(t_ortb)))} ms per call) |",
        f"| batch-1 throughput (1 / median latency) | {1 / ort1_med:.1f} images/s |",
        "",
        f"## 3. End-to-end folder scoring vs the raw model (batch {a.batch})",
        "",
        f"`score_inputs(..., overlays=True, batch_size={a.batch}, threads={a.threads})` on folders of {a.images} and "
        f"{a.long_images} PNGs ({len(src)} washer test images repeated, {imgs[0].shape[1]}x{imgs[0].shape[0]}): decode, "
        "fit, inference, regions, overlay + mask files, fsynced results.jsonl/csv. Raw = `Inspector.run` on a prepared "
        f"batch of {a.batch}, timed just before and just after each scoring run. The two folder sizes ran alternately, "
        f"{a.e2e_repeats} times each; their median times give the steady rate (seconds = fixed + images / rate).",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| folder of {a.images}: ScoreSummary.images_per_second, median of {a.e2e_repeats} | {e2e_med:.1f} images/s |",
        f"| folder of {a.images}: incl. session creation (wall clock) | {float(np.median(short['wall_ips'])):.1f} images/s |",
        f"| raw model around those runs | {raw_med:.1f} images/s |",
        f"| **ratio, folder of {a.images} / raw** | **{ratio:.0%}** (target >= {TARGET_E2E_RATIO:.0%}: "
        f"{'met' if ratio >= TARGET_E2E_RATIO else 'NOT met'}) |",
        f"| each run's ratio to the raw model timed around it | {', '.join(f'{x:.0%}' for x in run_ratios)} |",
        f"| folder of {a.long_images}: images/s, median of {a.e2e_repeats} (raw around: {long_raw:.1f}) | {long_med:.1f} images/s |",
        f"| **ratio, folder of {a.long_images} / raw** | **{long_med / long_raw:.0%}** (target >= {TARGET_E2E_RATIO:.0%}: "
        f"{'met' if long_med / long_raw >= TARGET_E2E_RATIO else 'NOT met'}); each run: "
        f"{', '.join(f'{e / r:.0%}' for e, r in zip(long['ips'], long['raw']))} |",
        f"| steady rate (from the two sizes' median times) | {steady:.1f} images/s = {steady / float(np.median(short['raw'] + long['raw'])):.0%} of raw |",
        f"| fixed cost per run (start-up, the first and slowest model call, drain) | {fixed * 1e3:.0f} ms "
        f"= {fixed / t_short:.0%} of the {a.images}-image run |",
        f"| ratio of the {a.images}-image run against section 2's raw figure | {e2e_med / ortb_ips:.0%} |",
    ]
    if e2e_1thread is not None:
        lines.append(f"| folder of {a.images} with `threads=1` (same pipeline, 1 inference thread; one run) | "
                     f"{e2e_1thread:.1f} images/s = {e2e_1thread / raw_med:.0%} of the {a.threads}-thread raw model |")
    lines += [
        "",
        f"Per-image cost of each stage run alone, serially, on {len(items)} images (the pipeline overlaps decode "
        "and overlays with inference in threads, but on "
        f"{cpu_count()} cores they compete with the {a.threads} inference threads):",
        "",
        "| stage | ms / image | share |",
        "|---|---|---|",
    ]
    total_stage = sum(stage.values())
    lines += [f"| {k} | {ms(v)} | {v / total_stage:.0%} |" for k, v in stage.items()]
    lines += [
        f"| sum (serial bound: {1 / total_stage:.1f} images/s) | {ms(total_stage)} | 100% |",
        "",
        "## 4. torch eager vs ONNX Runtime (same module)",
        "",
        f"torch and ORT timed round-robin in chunks ({a.runs} batch-1 runs, {a.b8_runs} batch-{a.batch} calls each), "
        f"so the ORT figures here are re-measured next to torch's. {a.threads} threads unless stated.",
        "",
        "| | torch eager | ONNX Runtime | ORT speed-up (torch time / ORT time) |",
        "|---|---|---|---|",
        f"| batch-1 latency, median | {ms(torch1_med)} ms | {ms(ortc1_med)} ms | {torch1_med / ortc1_med:.2f}x |",
        f"| batch-1 latency, p99 | {ms(torch1_p99)} ms | {ms(ortc1_p99)} ms | {torch1_p99 / ortc1_p99:.2f}x |",
        f"| batch-{a.batch} throughput | {torchb_ips:.1f} images/s | {ortcb_ips:.1f} images/s | {ortcb_ips / torchb_ips:.2f}x |",
        f"| torch eager with 1 thread, batch-1 latency median / p99 | {ms(torch1t_med)} / {ms(torch1t_p99)} ms | | "
        f"{torch1t_med / ortc1_med:.2f}x (vs ORT {a.threads} threads) |",
        "",
        f"Max |anomaly_map difference| ORT vs torch on the batch of {a.batch}: {parity:.2e}.",
        "",
        "## 5. FLOPs and CPU utilisation",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| FLOPs per image, ONNX graph (Conv/ConvTranspose/MatMul/Gemm MACs x 2, `infer_shapes` at batch 1) | "
        f"{flops / 1e9:.3f} GFLOP |",
        "| by op | " + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in sorted(flops_by_op.items())) + " GFLOP |",
        f"| cross-check: `torch.utils.flop_counter.FlopCounterMode` on the module | {flops_torch / 1e9:.3f} GFLOP |",
        f"| float32 matmul 1024x1024, torch, {a.threads} threads (median / best of {len(mm_t)}) | "
        f"{mm_med:.1f} / {mm_best:.1f} GFLOP/s |",
        f"| model, ORT batch 1 (FLOPs / latency): median / best call | {model_gflops_b1:.1f} / {model_gflops_b1_best:.1f} GFLOP/s |",
        f"| model, ORT batch {a.batch} (FLOPs x images/s): median / best call | {model_gflops_b8:.1f} / {model_gflops_b8_best:.1f} GFLOP/s |",
        f"| **fraction of matmul peak (best matmul)**: batch 1 median / best, batch {a.batch} median / best | "
        f"**{model_gflops_b1 / mm_best:.0%}** / {model_gflops_b1_best / mm_best:.0%}, "
        f"**{model_gflops_b8 / mm_best:.0%}** / {model_gflops_b8_best / mm_best:.0%} |",
        f"| fraction of the median matmul rate: batch 1, batch {a.batch} (medians) | "
        f"{model_gflops_b1 / mm_med:.0%}, {model_gflops_b8 / mm_med:.0%} |",
        "",
        f"The matmul calls were timed round-robin with the model's ({len(u['ort1'])} batch-1, {len(ub['ortb'])} "
        f"batch-{a.batch} calls), so both saw the same load. The peak is the best matmul call (the machine's "
        "capability); background load disturbs the medians, so best is compared with best as well.",
        "Element-wise ops, pooling, Resize and reductions are not counted; the smoothing and SSIM "
        "windows are convolutions in the graph and are counted.",
        "",
        "## 6. Session-option experiments (batch-1 latency)",
        "",
        f"All variants timed round-robin in chunks (each {a.runs} runs after {a.warmup} warm-up), so load changes "
        "hit them alike; the A/A row is a second identical baseline session and gives the noise floor. "
        "Threshold for a change: max(5%, 2 x A/A difference). "
        f"Session creation is the median of {create_reps} creations (also round-robin); "
        "a change there is reported when it is over 2x.",
        "",
        "| variant | median ms | p99 ms | session creation ms | max |Δ output| vs baseline | what moved |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in variants:
        med, p99 = stats(exp_times[name])
        lines.append(f"| {name} | {ms(med)} | {ms(p99)} | {create_s[name] * 1e3:.0f} | {diffs[name]:.1e} | {moved(name)} |")
    if max(float(load_start.split()[0]), float(load_end.split()[0])) > 0.5 * cpu_count():
        lines += ["", f"Load average was {load_start} at start and {load_end} at end on {cpu_count()} CPUs: a multi-threaded "
                  "run waits at every parallel region for whichever thread the OS has descheduled, so fewer threads "
                  "(and sequential execution) can look better than they would on a quiet machine. Re-run quiet before "
                  "acting on the thread and execution-mode rows."]
    lines += [
        "",
        "Graph after ORT's optimiser at each level (`optimized_model_filepath`):",
        "",
    ]
    for name in ("original", "BASIC", "EXTENDED", "ALL"):
        lines.append(f"- {name}: {nodes(node_counts[name])}")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    a.out.write_text(text)
    print(f"\nwritten to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
