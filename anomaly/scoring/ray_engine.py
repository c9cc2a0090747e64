"""`anomaly score --engine ray`: score a folder of images on a Ray cluster (Ray Data).

Optional extra: ``pip install "anomaly[ray]"`` (ray[data] + pyarrow). This module imports
neither at import time, and never imports torch: it runs wherever `anomaly.scoring.local` runs.

How a run works
---------------

- The driver (the process that calls `score_with_ray`) lists INPUT
  (`anomaly.scoring.inputs`), opens OUT_DIR through the same store as the local engine
  (`anomaly.scoring.store`: same model sha256, thresholds and input, or ``restart``), and
  splits the images still to do into chunks in input order (`anomaly.scoring.budget`:
  at most ``batch_size`` images and a bounded number of pixels, read from the files'
  headers): the very chunks the local engine forms, so both engines call the model on
  the same groups of images and give the same numbers.
- ``ray.data.from_items`` of those chunks (paths only) goes through
  ``map_batches(ChunkScorer, ...)``: a pool of actors, each holding ONE onnxruntime
  session (`Inspector`, created once in the actor's ``__init__``). An actor reads and
  decodes its chunk's files in threads and scores them with the local engine's code
  (`anomaly.scoring.ray_actor`: same rows, same ERROR rows), writes overlays if asked and
  returns the rows. The model file travels once through the Ray object store, so only
  the images need to be reachable from every node.
- The driver receives the rows block by block and, for each block, writes a Parquet
  shard (`anomaly.scoring.shards`) and appends the same rows to ``results.jsonl`` and
  ``results.csv``. When the run ends (or is interrupted), both files are rewritten in
  input order, one row per path: byte for byte what the local engine writes.

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
  the files the store moves aside.

Test hook: if the environment variable ``ANOMALY_RAY_CRASH_ONCE`` names a file that does
not exist, the first actor to finish a batch creates that file and kills its own process
(``os._exit``) before returning the batch, exactly once per marker file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anomaly.inspection.inspector import Inspector
from anomaly.scoring.budget import plan_chunks
from anomaly.scoring.inputs import InputItem, collect_inputs
from anomaly.scoring.overlay_files import overlay_mode
from anomaly.scoring.ray_actor import ChunkScorer
from anomaly.scoring.schema import Record
from anomaly.scoring.shards import SHARD_PATTERN, SHARDS_DIR, read_shards, table_to_records, write_shard
from anomaly.scoring.store import RunInfo, in_input_order, open_results
from anomaly.scoring.summary import ScoreSummary, summarize

CRASH_ENV = "ANOMALY_RAY_CRASH_ONCE"
MAX_IMAGES_PER_SHARD = 512
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


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


def _import_ray() -> Any:
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError as exc:
        raise RayNotInstalledError(
            f"the ray engine needs Ray Data and pyarrow ({exc}); install them with: pip install 'anomaly[ray]'"
        ) from exc
    return ray


# ----- the driver ---------------------------------------------------------------------
def _chunk_rows(items: Sequence[InputItem], size: int) -> list[dict[str, list[str]]]:
    """The Dataset rows: one chunk each, in input order: `plan_chunks`, the chunks the
    local engine forms (at most `size` images and IN_FLIGHT_PIXELS pixels), so both
    engines call the model on the same groups of images and an actor's memory is bounded."""
    out = []
    for chunk in plan_chunks(items, size):
        part = [x for x, _ in chunk]
        out.append(
            {
                "labels": [x.label for x in part],
                "paths": [os.path.abspath(x.path) for x in part],
                "shown": [str(x.path) for x in part],
            }
        )
    return out


def _ray_version(ray: Any) -> tuple[int, ...]:
    parts = []
    for p in str(getattr(ray, "__version__", "0")).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _pool_kwargs(ray: Any, workers: int, max_restarts: int | None) -> dict[str, Any]:
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


def _start_ray(
    ray: Any, address: str | None, num_cpus: int | None, init_kwargs: dict[str, Any] | None
) -> tuple[bool, float]:
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
        kwargs = dict(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    kwargs.update(init_kwargs or {})
    try:
        ray.init(**kwargs)
    except Exception as exc:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
        raise RayConnectError(
            f"could not {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    return True, time.perf_counter() - t0


@contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data's own progress bars and start-up lines off while ours runs, restored after."""
    ctx = ray.data.DataContext.get_current()
    old_ctx = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start") if hasattr(ctx, k)}
    quiet = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}
    old_levels = {name: logging.getLogger(name).level for name in quiet}
    for k in old_ctx:
        setattr(ctx, k, False)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in old_levels.items():
            logging.getLogger(name).setLevel(level)
        for k, v in old_ctx.items():
            setattr(ctx, k, v)


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
    CPUs (all CPUs if workers is None), stopped at the end. A Ray already initialised in
    this process is used as it is. workers: scoring actors (default: the cluster's CPUs //
    threads). threads: onnxruntime threads per actor, also the CPUs each actor reserves
    (default 1). max_restarts: how often an actor may be restarted, and a batch retried,
    after its process died. Output files are the local engine's, plus ``shards/*.parquet``.
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
    # Loading the model here refuses a bad file before anything starts.
    thresholds = Inspector(model, threads=1).thresholds(image_threshold, pixel_threshold)
    model_bytes = model.read_bytes()
    sha = hashlib.sha256(model_bytes).hexdigest()
    run = RunInfo.of(model, input, thresholds, model_sha256=sha)
    crash_marker = os.environ.get(CRASH_ENV) or None

    writer = open_results(out_dir, run, restart=restart, extra_row_dirs={SHARDS_DIR: SHARD_PATTERN})
    started_here, startup, n_workers, n_shards, scored, seconds = False, 0.0, 0, 0, 0, 0.0
    order = [x.label for x in items]
    appending = False
    try:
        shards_dir = out_dir / SHARDS_DIR
        if not shards_dir.exists() and writer.records:
            write_shard(shards_dir, list(writer.records.values()), run, name="adopted-results-jsonl.parquet")
        writer.rewrite(in_input_order(read_shards(out_dir, run), order))
        todo = [x for x in items if x.label not in writer.records]
        resumed = len(items) - len(todo)
        if todo:
            started_here, startup = _start_ray(ray, address, workers * threads if workers else None, init_kwargs)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            n_workers = workers or max(1, cpus // threads)
            chunks = _chunk_rows(todo, batch_size)
            per_block = max(
                1, min(math.ceil(len(chunks) / (4 * n_workers)), max(1, MAX_IMAGES_PER_SHARD // batch_size))
            )
            n_blocks = math.ceil(len(chunks) / per_block)
            n_workers = min(n_workers, n_blocks)  # no actor started (and model loaded) for nothing
            model_ref = ray.put(model_bytes)
            appending = True
            bar = tqdm(
                total=len(items),
                initial=resumed,
                unit="img",
                desc=f"scoring (ray, {n_workers} workers)",
                disable=not progress,
                dynamic_ncols=True,
                smoothing=0.1,
            )
            t0 = time.perf_counter()
            try:
                with _quiet_ray_data(ray):
                    ds = ray.data.from_items(chunks, override_num_blocks=n_blocks)
                    with warnings.catch_warnings():  # "ray_remote_args is deprecated": see _pool_kwargs
                        warnings.simplefilter("ignore", DeprecationWarning)
                        ds = ds.map_batches(
                            ChunkScorer,
                            fn_constructor_kwargs=dict(
                                model=model_ref,
                                model_sha256=sha,
                                threads=threads,
                                image_threshold=thresholds[0],
                                pixel_threshold=thresholds[1],
                                batch_size=batch_size,
                                overlays_dir=str(out_dir.resolve()) if mode else None,
                                overlays_mode=mode,
                                decode_threads=max(2, threads),
                                crash_marker=crash_marker,
                            ),
                            batch_size=1,
                            batch_format="numpy",
                            num_cpus=threads,
                            **_pool_kwargs(ray, n_workers, max_restarts),
                        )
                    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
                        fresh: dict[str, Record] = {}
                        for rec in table_to_records(block):
                            if rec["path"] not in writer.records:
                                fresh.setdefault(rec["path"], rec)
                        if not fresh:
                            continue
                        rows = list(fresh.values())
                        write_shard(shards_dir, rows, run)
                        n_shards += 1
                        writer.append(rows)
                        scored += len(rows)
                        bar.update(len(rows))
            except (KeyboardInterrupt, RayScoringError):
                raise
            except Exception as exc:
                raise RayScoringError(
                    f"the Ray job stopped ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); "
                    f"{len(writer.records)} rows are kept in {out_dir}, run again to resume"
                ) from exc
            finally:
                seconds = time.perf_counter() - t0
                bar.close()
    finally:
        try:
            if appending:
                writer.rewrite(in_input_order(writer.records, order))  # input order, one row per path
        finally:
            writer.close()
            if started_here:
                ray.shutdown()
    base = summarize(writer.records, order, scored, resumed, seconds, out_dir)
    return RayScoreSummary(**asdict(base), workers=n_workers, startup_seconds=round(startup, 3), shards=n_shards)
