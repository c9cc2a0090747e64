"""`anomaly score --engine ray`: score a folder of images on a Ray cluster (Ray Data).

Optional extra: ``pip install "anomaly[ray]"`` (ray[data] + pyarrow). This module imports
neither at import time, and never imports torch: it runs wherever `anomaly.scoring.local` runs.

How a run works
---------------

- The driver (the process that calls `score_with_ray`) lists INPUT with
  `anomaly.scoring.local.collect_inputs`, checks OUT_DIR exactly like the local scorer
  (`RunInfo`, `open_results`: same model sha256, thresholds and input, or ``restart``),
  and splits the images still to do into chunks of ``batch_size`` in input order: the
  very chunks the local scorer would form, so both engines call the model on the same
  groups of images and give the same numbers.
- ``ray.data.from_items`` of those chunks (paths only) goes through
  ``map_batches(ChunkScorer, concurrency=workers)``: a pool of actors, each holding ONE
  onnxruntime session (`Inspector`, created once in the actor's ``__init__``). An actor
  reads and decodes its chunk's files in parallel threads with `load_input` (decoding
  where the model runs: a decoded float32 image is 4-12x the size of its file, so it is
  never shipped between processes), scores them (`anomaly.scoring.local._inspect_chunk`: the
  same code and the same ERROR rows as the local scorer), writes overlays if asked and
  returns the rows. The model file travels once through the Ray object store, so only
  the images need to be reachable from every node.
- The driver receives the rows block by block and, for each block, writes a Parquet
  shard ``OUT_DIR/shards/part-*.parquet`` (to a temporary name, fsynced, then renamed)
  and appends the same rows to ``results.jsonl`` and ``results.csv``. When the run ends
  (or is interrupted), both files are rewritten from all shards in input order,
  one row per path: byte for byte what the local scorer writes for the same folder.

Nothing is lost
---------------

- The shards are this engine's record of truth. A re-run (same model, thresholds and
  input) reads them, skips every path they hold and scores the rest; ``results.jsonl``
  and ``results.csv`` are rebuilt from them. A shard that cannot be read is renamed to
  ``*.parquet.unreadable`` and its images are scored again. A folder begun by the local
  engine (results.jsonl but no ``shards/``) is adopted: its rows become a first shard.
- An actor that dies mid-batch is restarted and its batch retried by Ray (``max_restarts``
  / ``max_task_retries``); rows are keyed by path and the driver writes each path once,
  so nothing is lost or duplicated. When the retries are exhausted the run stops with
  `RayScoringError`; everything written so far stays, and the next run resumes.
- ``restart=True`` moves ``shards/`` aside to ``shards.<UTC timestamp>`` along with
  the files `anomaly.scoring.local.move_aside` moves.

Test hook: if the environment variable ``ANOMALY_RAY_CRASH_ONCE`` names a file that does
not exist, the first actor to finish a batch creates that file and kills its own process
(``os._exit``) before returning the batch, exactly once per marker file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anomaly.scoring.local import (
    CSV_COLUMNS,
    RESULTS_CSV,
    RESULTS_JSONL,
    RUN_JSON,
    InputItem,
    RunInfo,
    ScoreSummary,
    _fsync_dir,
    _inspect_chunk,
    _write_text_atomic,
    collect_inputs,
    csv_row,
    load_input,
    open_results,
    overlay_mode,
    result_row,
    summarize,
    wants_overlay,
    write_overlays,
)
from anomaly.inspection.inspector import Inspection, Inspector

SHARDS_DIR = "shards"
CRASH_ENV = "ANOMALY_RAY_CRASH_ONCE"
RECORD_KEYS = ("path", "score", "verdict", "image_threshold", "pixel_threshold", "width", "height", "regions", "error")
SHARD_META_PREFIX = "anomaly."
MAX_IMAGES_PER_SHARD = 512
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024

log = logging.getLogger(__name__)


class RayNotInstalledError(ImportError, ValueError):
    """The Ray engine was asked for but ray[data]/pyarrow are not installed (a ValueError
    too, so `anomaly score` reports it in one line and exits 2)."""


class RayConnectError(ConnectionError, ValueError):
    """Ray could not be started or joined (wrong --address, cluster down); a ValueError
    too, so `anomaly score` reports it in one line and exits 2."""


class RayScoringError(RuntimeError):
    """The Ray job failed (e.g. a batch kept killing its actor); rows written so far are kept."""


@dataclass
class RayScoreSummary(ScoreSummary):
    """ScoreSummary plus the Ray side: `seconds` counts from the first batch submitted
    (actors starting and loading the model included), `startup_seconds` is ray.init alone
    (0 when Ray was already running or nothing was left to score)."""

    workers: int = 0
    startup_seconds: float = 0.0
    shards: int = 0

    def describe(self) -> str:
        text = super().describe()
        if self.workers:
            text += f" [ray: {self.workers} workers, startup {self.startup_seconds:.1f} s]"
        return text


def _import_ray():
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError as exc:
        raise RayNotInstalledError(
            f"the ray engine needs Ray Data and pyarrow ({exc}); install them with: pip install 'anomaly[ray]'"
        ) from exc
    return ray


# ----- shards -------------------------------------------------------------------------
def _shard_schema(run: RunInfo | None = None):
    import pyarrow as pa

    schema = pa.schema([
        ("path", pa.string()),
        ("score", pa.float64()),
        ("verdict", pa.string()),
        ("image_threshold", pa.float64()),
        ("pixel_threshold", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("regions", pa.string()),  # JSON list, as in results.jsonl
        ("error", pa.string()),
    ])
    if run is not None:
        schema = schema.with_metadata({
            SHARD_META_PREFIX + k: str(v) for k, v in
            (("model_sha256", run.model_sha256), ("image_threshold", repr(run.image_threshold)),
             ("pixel_threshold", repr(run.pixel_threshold)), ("input", run.input))
        })
    return schema


def records_to_table(records: Sequence[dict[str, Any]], run: RunInfo | None = None):
    """results.jsonl records as a pyarrow Table with the shard schema."""
    import pyarrow as pa

    cols: dict[str, list] = {k: [] for k in RECORD_KEYS}
    for r in records:
        for k in RECORD_KEYS:
            cols[k].append(json.dumps(r.get("regions") or []) if k == "regions" else r.get(k))
    return pa.Table.from_pydict(cols, schema=_shard_schema(run))


def table_to_records(table) -> list[dict[str, Any]]:
    """The inverse of `records_to_table`: records equal to what results.jsonl holds."""
    out = []
    for row in table.select(list(RECORD_KEYS)).to_pylist():
        row["regions"] = json.loads(row["regions"]) if row["regions"] else []
        out.append({k: row[k] for k in RECORD_KEYS})
    return out


def write_shard(shards_dir: Path, records: Sequence[dict[str, Any]], run: RunInfo, name: str | None = None) -> Path:
    """Write one Parquet shard atomically: temporary name, fsync, rename, fsync the folder."""
    import pyarrow.parquet as pq

    shards_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"part-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
    final = shards_dir / name
    tmp = shards_dir / f".{name}.tmp{os.getpid()}"
    try:
        pq.write_table(records_to_table(records, run), tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(shards_dir)
    return final


def shard_files(out_dir: str | Path) -> list[Path]:
    """The complete shards of OUT_DIR (temporary files of an interrupted write excluded)."""
    d = Path(out_dir) / SHARDS_DIR
    return sorted(p for p in d.glob("*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


def _shard_mismatch(meta: dict[bytes, bytes] | None, run: RunInfo) -> str | None:
    meta = {k.decode(): v.decode() for k, v in (meta or {}).items()}
    sha = meta.get(SHARD_META_PREFIX + "model_sha256")
    if sha is not None and sha != run.model_sha256:
        return f"model sha256 {sha[:12]} vs now {run.model_sha256[:12]}"
    for key in ("image_threshold", "pixel_threshold"):
        raw = meta.get(SHARD_META_PREFIX + key)
        if raw is not None and not math.isclose(float(raw), getattr(run, key), rel_tol=1e-9, abs_tol=1e-12):
            return f"{key.replace('_', ' ')} {raw} vs now {getattr(run, key)}"
    return None


def read_shards(out_dir: str | Path, run: RunInfo | None = None) -> dict[str, dict[str, Any]]:
    """All rows of OUT_DIR's shards, one per path (the first shard, by name, wins).

    An unreadable shard is renamed to ``<name>.unreadable`` (its images are then scored
    again); a shard written for another model or thresholds than `run` raises ValueError."""
    import pyarrow.parquet as pq

    records: dict[str, dict[str, Any]] = {}
    for shard in shard_files(out_dir):
        try:
            table = pq.read_table(shard)
        except Exception as exc:  # noqa: BLE001 - any damage: score those images again
            log.warning("%s: unreadable shard (%s); its images will be scored again", shard, exc)
            os.replace(shard, shard.with_name(shard.name + ".unreadable"))
            continue
        if run is not None:
            diff = _shard_mismatch(table.schema.metadata, run)
            if diff:
                raise ValueError(f"{shard}: rows of a different run ({diff}); use --restart (earlier results are "
                                 "moved aside, not deleted) or another --out")
        for rec in table_to_records(table):
            records.setdefault(rec["path"], rec)
    return records


# ----- results.jsonl / results.csv ----------------------------------------------------
def _csv_lines(records: Iterable[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(csv_row(r) for r in records)
    return buf.getvalue()


def _ordered(records: dict[str, dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Rows in input order, then rows of paths no longer in the input (kept, never dropped)."""
    seen = set(order)
    return [records[p] for p in order if p in records] + [r for p, r in records.items() if p not in seen]


def write_results(out_dir: str | Path, records: dict[str, dict[str, Any]], order: Sequence[str]) -> None:
    """Rewrite results.jsonl and results.csv (atomically) from `records`, one row per path."""
    out_dir = Path(out_dir)
    rows = _ordered(records, order)
    import csv
    import io

    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(CSV_COLUMNS)
    _write_text_atomic(out_dir / RESULTS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    _write_text_atomic(out_dir / RESULTS_CSV, head.getvalue() + _csv_lines(rows))


class _Appender:
    """Appends rows to results.jsonl and results.csv, flushed and fsynced per call."""

    def __init__(self, out_dir: Path) -> None:
        self._jsonl = open(out_dir / RESULTS_JSONL, "a", encoding="utf-8", newline="")
        self._csv = open(out_dir / RESULTS_CSV, "a", encoding="utf-8", newline="")

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        for f, text in ((self._jsonl, "".join(json.dumps(r) + "\n" for r in records)), (self._csv, _csv_lines(records))):
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        self._jsonl.close()
        self._csv.close()


def _move_shards_aside(out_dir: Path) -> Path | None:
    src = out_dir / SHARDS_DIR
    if not src.exists():
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target, k = out_dir / f"{SHARDS_DIR}.{stamp}", 1
    while target.exists():
        target, k = out_dir / f"{SHARDS_DIR}.{stamp}-{k}", k + 1
    os.replace(src, target)
    _fsync_dir(out_dir)
    return target


def _check_shards_belong(out_dir: Path, run: RunInfo) -> None:
    """Shards without results.jsonl rows are not covered by open_results' check: do it."""
    if not shard_files(out_dir):
        return
    hint = "use --restart (earlier results are moved aside, not deleted) or another --out"
    try:
        previous = json.loads((out_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        raise ValueError(f"{out_dir}: holds {SHARDS_DIR}/ but no readable {RUN_JSON}, so the model and thresholds "
                         f"behind them are unknown; {hint}")
    diffs = run.mismatches(previous)
    if diffs:
        raise ValueError(f"{out_dir}: holds results of a different run ({'; '.join(diffs)}); {hint}")


# ----- the actor ----------------------------------------------------------------------
def _materialize_model(model: Any, sha256: str) -> Path:
    """The model's bytes (or an ObjectRef to them) as a local file named by its sha256."""
    folder = Path(tempfile.gettempdir()) / "anomaly-ray-models"
    path = folder / f"{sha256}.onnx"
    if path.is_file():
        return path
    if not isinstance(model, (bytes, bytearray, memoryview)):
        import ray

        model = ray.get(model)
    data = bytes(model)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ValueError(f"model bytes received by the actor have sha256 {got[:12]}, expected {sha256[:12]}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{sha256}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _crash_once(marker: str | None) -> None:
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    os.write(fd, f"killed pid {os.getpid()}\n".encode())
    os.fsync(fd)
    os.close(fd)
    os._exit(17)


def score_chunk(inspector: Inspector, items: Sequence[InputItem], shown: Sequence[str], image_threshold: float,
                pixel_threshold: float, batch_size: int, decoder: ThreadPoolExecutor | None = None,
                overlays_dir: str | None = None, overlays_mode: str | None = "all") -> list[dict[str, Any]]:
    """The rows of one chunk, built exactly as `anomaly.scoring.local.score_inputs` builds them.
    `shown[i]` is how items[i].path is named in error messages (the path as the user gave
    it; the actor may read it through an absolute path)."""
    it, pt = image_threshold, pixel_threshold
    loaded = list(decoder.map(load_input, items)) if decoder is not None else [load_input(x) for x in items]
    readable = [x for x in loaded if x.image is not None]
    results = iter(_inspect_chunk(inspector, [x.image for x in readable], it, pt, batch_size)) if readable else iter(())
    rows = []
    for x, name in zip(loaded, shown):
        res = x.error if x.image is None else next(results)
        label = x.item.label
        if isinstance(res, Inspection):
            res.name = label
            if overlays_dir is not None and wants_overlay(overlays_mode, res):
                write_overlays(overlays_dir, label, x.image, res)
            rows.append(result_row(label, res))
        else:
            msg = str(res)
            read_as = str(x.item.path)
            if x.image is None:
                if read_as != name:
                    msg = msg.replace(read_as, name)
            else:
                msg = f"{name}: {msg}"
            hw = x.image.shape[:2] if x.image is not None else (None, None)
            rows.append(result_row(label, msg, hw[1], hw[0], image_threshold=it, pixel_threshold=pt))
    return rows


class ChunkScorer:
    """A Ray Data callable class: one actor = one onnxruntime session, loaded in __init__.

    Each input row is one chunk (``labels``, ``paths`` to read, ``shown`` paths for
    messages); the output holds one row per image with the shard schema."""

    def __init__(self, model: Any, model_sha256: str, threads: int, image_threshold: float, pixel_threshold: float,
                 batch_size: int, overlays_dir: str | None = None, overlays_mode: str | None = "all", decode_threads: int = 2,
                 crash_marker: str | None = None) -> None:
        self.inspector = Inspector(_materialize_model(model, model_sha256), threads=threads, spin=False)  # decoding shares the cores
        self.image_threshold, self.pixel_threshold = image_threshold, pixel_threshold
        self.batch_size = batch_size
        self.overlays_dir, self.overlays_mode = overlays_dir, overlays_mode
        self.decoder = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="anomaly-decode")
        self.crash_marker = crash_marker

    def __call__(self, batch: dict[str, Any]):
        rows: list[dict[str, Any]] = []
        for labels, paths, shown in zip(batch["labels"], batch["paths"], batch["shown"]):
            items = [InputItem(str(lb), Path(str(p))) for lb, p in zip(labels, paths)]
            rows += score_chunk(self.inspector, items, [str(s) for s in shown], self.image_threshold,
                                self.pixel_threshold, self.batch_size, self.decoder, self.overlays_dir, self.overlays_mode)
        _crash_once(self.crash_marker)
        return records_to_table(rows)


# ----- the driver ---------------------------------------------------------------------
def _chunks(items: Sequence[InputItem], size: int) -> list[dict[str, list[str]]]:
    out = []
    for i in range(0, len(items), size):
        part = items[i : i + size]
        out.append({"labels": [x.label for x in part], "paths": [os.path.abspath(x.path) for x in part],
                    "shown": [str(x.path) for x in part]})
    return out


def _ray_version(ray) -> tuple[int, ...]:
    parts = []
    for p in str(getattr(ray, "__version__", "0")).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _pool_kwargs(ray, workers: int, max_restarts: int | None) -> dict[str, Any]:
    """map_batches keywords for a fixed pool of `workers` actors, across Ray versions:
    `concurrency=` (2.30-2.50) or `compute=ActorPoolStrategy(size=)` (2.51+); bounded
    actor restarts / task retries as remote args while Ray accepts them (before 2.64;
    from then on Ray Data's own default applies: restart and retry without limit)."""
    version = _ray_version(ray)
    kw: dict[str, Any] = {}
    if version >= (2, 51):
        kw["compute"] = ray.data.ActorPoolStrategy(size=workers)
    else:
        kw["concurrency"] = workers
    if max_restarts is not None and version < (2, 64):
        kw.update(max_restarts=max_restarts, max_task_retries=max_restarts)
    return kw


def _start_ray(ray, address: str | None, num_cpus: int | None, init_kwargs: dict[str, Any] | None) -> tuple[bool, float]:
    """Connect to `address` or start a light local instance; (started here, seconds)."""
    if ray.is_initialized():
        return False, 0.0
    t0 = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS") or None  # e.g. set by `ray job submit`
    if address:  # the cluster's own settings apply (and Ray Client accepts few keywords)
        kwargs: dict[str, Any] = dict(address=address)
    else:
        # "local": always a new instance, never a cluster some earlier `ray start` left registered
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs = dict(address="local", num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                      include_dashboard=False, logging_level=logging.WARNING)
    kwargs.update(init_kwargs or {})
    try:
        ray.init(**kwargs)
    except Exception as exc:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
        raise RayConnectError(f"could not {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return True, time.perf_counter() - t0


def score_with_ray(
    input: str | Path,
    model: str | Path,
    out_dir: str | Path,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    overlays: bool | str = False,
    batch_size: int = 8,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    restart: bool = False,
    progress: bool = True,
    *,
    max_restarts: int | None = 3,
    init_kwargs: dict[str, Any] | None = None,
) -> RayScoreSummary:
    """Score every image of INPUT with the ONNX model into OUT_DIR on Ray (module doc).

    address: a Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    None means $RAY_ADDRESS if set, else a new local instance with ``workers * threads``
    CPUs (all CPUs if workers is None), stopped at the end. A Ray already initialised in this process is used as
    it is. workers: scoring actors (default: the cluster's CPUs // threads). threads:
    onnxruntime threads per actor, also the CPUs each actor reserves (default 1).
    max_restarts: how often an actor may be restarted, and a batch retried, after its
    process died. Output files are the local scorer's, plus ``shards/*.parquet``.
    """
    from tqdm import tqdm

    ray = _import_ray()
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    threads = 1 if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    mode = overlay_mode(overlays)
    input, model, out_dir = Path(input), Path(model), Path(out_dir)
    items = collect_inputs(input)
    inspector = Inspector(model, threads=1)  # validates the file before anything starts
    it = inspector.image_threshold if image_threshold is None else float(image_threshold)
    pt = inspector.pixel_threshold if pixel_threshold is None else float(pixel_threshold)
    del inspector
    model_bytes = model.read_bytes()
    sha = hashlib.sha256(model_bytes).hexdigest()
    run = RunInfo(model=str(model.resolve()), model_sha256=sha, image_threshold=it, pixel_threshold=pt,
                  input=str(input.resolve()))
    if not restart:
        _check_shards_belong(out_dir, run)
    crash_marker = os.environ.get(CRASH_ENV) or None

    writer = open_results(out_dir, run, restart=restart)  # lock, run.json, repair results.jsonl
    started_here, startup, n_workers, n_shards, scored = False, 0.0, 0, 0, 0
    order = [x.label for x in items]
    appender: _Appender | None = None
    records: dict[str, dict[str, Any]] = {}
    seconds = 0.0
    try:
        if restart:
            _move_shards_aside(out_dir)
        shards_dir = out_dir / SHARDS_DIR
        if not shards_dir.exists() and writer.records:
            write_shard(shards_dir, list(writer.records.values()), run, name="adopted-results-jsonl.parquet")
        records = read_shards(out_dir, run)
        write_results(out_dir, records, order)
        todo = [x for x in items if x.label not in records]
        resumed = len(items) - len(todo)
        if todo:
            started_here, startup = _start_ray(ray, address, workers * threads if workers else None, init_kwargs)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            n_workers = workers or max(1, cpus // threads)
            chunks = _chunks(todo, batch_size)
            per_block = max(1, min(math.ceil(len(chunks) / (4 * n_workers)), max(1, MAX_IMAGES_PER_SHARD // batch_size)))
            n_blocks = math.ceil(len(chunks) / per_block)
            n_workers = min(n_workers, n_blocks)  # no actor started (and model loaded) for nothing
            ctx = ray.data.DataContext.get_current()
            old_ctx = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start") if hasattr(ctx, k)}
            for k in old_ctx:
                setattr(ctx, k, False)  # our own progress bar instead
            quiet = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}  # our own bar
            old_levels = {name: logging.getLogger(name).level for name in quiet}
            for name, level in quiet.items():
                logging.getLogger(name).setLevel(level)
            model_ref = ray.put(model_bytes)
            appender = _Appender(out_dir)
            bar = tqdm(total=len(items), initial=resumed, unit="img", desc=f"scoring (ray, {n_workers} workers)",
                       disable=not progress, dynamic_ncols=True, smoothing=0.1)
            t0 = time.perf_counter()
            try:
                ds = ray.data.from_items(chunks, override_num_blocks=n_blocks)
                with warnings.catch_warnings():  # "ray_remote_args is deprecated": see _pool_kwargs
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ds = ds.map_batches(
                        ChunkScorer,
                        fn_constructor_kwargs=dict(model=model_ref, model_sha256=sha, threads=threads, image_threshold=it,
                                                   pixel_threshold=pt, batch_size=batch_size,
                                                   overlays_dir=str(out_dir.resolve()) if mode else None, overlays_mode=mode,
                                                   decode_threads=max(2, threads), crash_marker=crash_marker),
                        batch_size=1, batch_format="numpy", num_cpus=threads,
                        **_pool_kwargs(ray, n_workers, max_restarts),
                    )
                for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
                    fresh: dict[str, dict[str, Any]] = {}
                    for rec in table_to_records(block):
                        if rec["path"] not in records:
                            fresh.setdefault(rec["path"], rec)
                    if not fresh:
                        continue
                    rows = list(fresh.values())
                    write_shard(shards_dir, rows, run)
                    n_shards += 1
                    appender.append(rows)
                    records.update(fresh)
                    scored += len(rows)
                    bar.update(len(rows))
            except (KeyboardInterrupt, RayScoringError):
                raise
            except Exception as exc:
                raise RayScoringError(f"the Ray job stopped ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); "
                                      f"{len(records)} rows are kept in {out_dir}, run again to resume") from exc
            finally:
                seconds = time.perf_counter() - t0
                bar.close()
                for name, level in old_levels.items():
                    logging.getLogger(name).setLevel(level)
                for k, v in old_ctx.items():
                    setattr(ctx, k, v)
        else:
            seconds = 0.0
    finally:
        try:
            if appender is not None:
                appender.close()
                write_results(out_dir, records, order)  # input order, one row per path
        finally:
            writer.close()
            if started_here:
                ray.shutdown()
    mine = set(order)
    base = summarize((r for p, r in records.items() if p in mine), len(items), scored, resumed, seconds, out_dir)
    return RayScoreSummary(**asdict(base), workers=n_workers, startup_seconds=round(startup, 3), shards=n_shards)
