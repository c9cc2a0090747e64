"""`anomaly score`: inspect a folder (or a list) of images with an exported ONNX model.

numpy, OpenCV, onnxruntime and tqdm only: this engine imports no torch, directly or
indirectly, so it runs on a line PC without the training extra.

What a run writes to OUT_DIR is described in `anomaly.scoring.schema` (the files and
their rows), `anomaly.scoring.store` (resume, restart, locking) and
`anomaly.scoring.overlay_files` (with ``overlays=True`` or ``"all"``; ``"fails"``: only
for parts that fail). An unreadable image (corrupt, empty, too small, not an image)
becomes an ERROR row naming the file and the run goes on. Ctrl-C keeps every row
finished so far. Exit codes: `anomaly.scoring.summary`.

The work runs in three stages so that inference never waits: a thread pool decodes and
prepares images ahead of it, the calling thread calls the model a batch at a time, and
one more thread turns the model's outputs into rows, regions and overlays. What is in
flight across the three is bounded by pixels as well as by count
(`anomaly.scoring.budget`), so memory stays bounded whatever the images' size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from anomaly.inspection.inspector import Backend, Inspector
from anomaly.scoring.budget import PixelBudget, plan_chunks
from anomaly.scoring.inference import ModelOutput, chunk_outputs, chunk_records
from anomaly.scoring.inputs import Grid, InputItem, Loaded, collect_inputs, load_input
from anomaly.scoring.overlay_files import overlay_mode
from anomaly.scoring.schema import Record
from anomaly.scoring.store import RunInfo, file_sha256, open_results
from anomaly.scoring.summary import ScoreSummary, summarize

log = logging.getLogger(__name__)


def _lower_priority() -> None:
    """Decode and overlay threads yield the CPU to inference: a preempted ORT thread
    stalls the whole parallel op, while decoding can wait for ORT's idle moments
    (Linux: per-thread nice; elsewhere nothing happens)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _load_chunks(
    todo: Sequence[InputItem],
    batch_size: int,
    pool: ThreadPoolExecutor,
    grid: Grid,
    pictures: bool,
    budget: PixelBudget,
) -> Iterator[list[tuple[Loaded, int]]]:
    """The chunks of `plan_chunks`, decoded and prepared in the pool, each image with its
    pixels: up to 2 x batch_size images are decoding or decoded ahead of the consumer,
    while `budget` admits them (the consumer gives an image's pixels back once its row
    is finished)."""
    stream = ((x, px, k == len(c) - 1) for c in plan_chunks(todo, batch_size) for k, (x, px) in enumerate(c))
    queue: deque[tuple[Future[Loaded], int, bool]] = deque()
    upcoming = next(stream, None)
    chunk: list[tuple[Loaded, int]] = []

    def submit() -> None:
        nonlocal upcoming
        assert upcoming is not None
        item, pixels, last = upcoming
        queue.append((pool.submit(load_input, item, grid, pictures), pixels, last))
        upcoming = next(stream, None)

    try:
        while queue or upcoming is not None:
            if not queue:  # the next image of the plan: wait for the pixels of finished rows
                assert upcoming is not None
                budget.take(upcoming[1])
                submit()
            while upcoming is not None and len(queue) < 2 * batch_size and budget.try_take(upcoming[1]):
                submit()
            fut, pixels, last = queue.popleft()
            chunk.append((fut.result(), pixels))
            del fut  # the chunk alone holds the image
            if last:
                yield chunk
                chunk = []
    finally:
        for fut, pixels, _ in queue:
            if fut.cancel():
                budget.give(pixels)


def _warn_if_replaced(model: Path, sha256: str) -> None:
    """Say so when the model file changed while this run scored with the bytes it loaded
    at the start (recorded in run.json): a re-run would be refused as another model."""
    try:
        now = file_sha256(model)
    except OSError:
        now = "missing"
    if now != sha256:
        log.warning(
            "%s changed while scoring: every row of this run is from the file as loaded at the start "
            "(sha256 %s, in run.json); scoring with the new file needs --restart or another --out",
            model,
            sha256[:12],
        )


def score_inputs(
    input: Path,
    model: Path,
    out_dir: Path,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    overlays: bool | str = False,
    batch_size: int = 8,
    threads: int | None = None,
    restart: bool = False,
    progress: bool = True,
    backend: Backend = "onnxruntime",
) -> ScoreSummary:
    """Score every image of INPUT with the ONNX model into OUT_DIR (see the module doc).

    Each batch's rows are appended and fsynced, in input order, once its overlays are on
    disk.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    mode = overlay_mode(overlays)
    input, model, out_dir = Path(input), Path(model), Path(out_dir)
    items = collect_inputs(input)
    # Decode and overlay threads share the cores with inference: idle ORT threads must
    # sleep, not spin, or they take the CPU those threads need.
    inspector = Inspector(model, threads=threads, spin=False, backend=backend)
    thresholds = inspector.thresholds(image_threshold, pixel_threshold)
    run = RunInfo.of(model, input, thresholds, model_sha256=inspector.sha256)

    start = time.perf_counter()
    scored = 0
    writer = open_results(out_dir, run, restart=restart)
    todo = [x for x in items if x.label not in writer.records]
    resumed = len(items) - len(todo)
    decode_workers = max(1, min(4, os.cpu_count() or 1))
    decoder = ThreadPoolExecutor(decode_workers, thread_name_prefix="anomaly-decode", initializer=_lower_priority)
    # Heatmaps back to image size, masks, regions and overlays happen in this thread, so
    # the inference thread goes straight on to the next batch.
    finisher = ThreadPoolExecutor(1, thread_name_prefix="anomaly-finish", initializer=_lower_priority)
    pending: deque[Future[list[Record]]] = deque()  # each chunk's rows, in input order
    budget = PixelBudget()  # the pixels of the images begun and not yet finished (anomaly.scoring.budget)
    overlays_to = out_dir if mode else None

    def finish(chunk: list[tuple[Loaded, int]], outputs: list[ModelOutput]) -> list[Record]:
        """A chunk's rows; each image is dropped, and its pixels given back, once its
        row is done (all of them if the chunk fails, so decoding never waits for them)."""
        records: list[Record] = []
        remaining = iter(outputs)
        chunk.reverse()
        try:
            while chunk:
                x, pixels = chunk[-1]
                records += chunk_records(
                    [x], [next(remaining)] if x.prepared is not None else [], thresholds, overlays_to, mode
                )
                chunk.pop()
                del x
                budget.give(pixels)
        finally:
            budget.give(sum(pixels for _, pixels in chunk))
            chunk.clear()
        return records

    def keep(records: list[Record]) -> None:
        nonlocal scored
        writer.append(records)
        scored += len(records)

    def flush(block: bool) -> None:
        while pending and (block or pending[0].done()):
            keep(pending[0].result())  # an overlay that could not be written (disk full...) stops the run
            pending.popleft()

    bar = tqdm(
        total=len(items),
        initial=resumed,
        unit="img",
        desc="scoring",
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        grid = inspector.info.grid
        for chunk in _load_chunks(todo, batch_size, decoder, grid, pictures=mode is not None, budget=budget):
            loaded = [x for x, _ in chunk]
            outputs = chunk_outputs(inspector, loaded, batch_size)
            del loaded  # from here on the finisher holds the chunk's images, and drops each once done
            bar_step = len(chunk)
            pending.append(finisher.submit(finish, chunk, outputs))
            if len(pending) > 2:  # bound the chunks waiting for their rows
                pending[0].result()
            flush(block=False)
            bar.update(bar_step)
        flush(block=True)
    finally:
        try:
            finisher.shutdown(wait=True)
            decoder.shutdown(wait=False, cancel_futures=True)
            # Keep every batch whose rows (and overlays) were finished, even on Ctrl-C or an
            # error, unless the error was the results files' own (the next run resumes).
            while (
                writer.failed is None
                and pending
                and pending[0].done()
                and not pending[0].cancelled()
                and pending[0].exception() is None
            ):
                keep(pending.popleft().result())
        finally:
            writer.close()
            bar.close()
    seconds = time.perf_counter() - start
    _warn_if_replaced(model, inspector.sha256)
    return summarize(writer.records, [x.label for x in items], scored, resumed, seconds, out_dir)
