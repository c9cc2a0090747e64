"""What runs inside each Ray actor of `anomaly score --engine ray`: one model, many chunks.

An actor holds ONE onnxruntime session for its life and scores one chunk of image paths
per call with the local engine's code (`anomaly.scoring.inference`), so the rows are the
ones the local engine writes. Imported by Ray in the worker processes; no ray import here
except to fetch the model's bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from anomaly.inspection.inspector import Inspector
from anomaly.scoring.inference import score_loaded
from anomaly.scoring.inputs import InputItem, load_input
from anomaly.scoring.overlay_files import OverlayMode
from anomaly.scoring.schema import Record
from anomaly.scoring.shards import records_to_table


def _materialize_model(model: Any, sha256: str) -> Path:
    """The model's bytes (or an ObjectRef to them) as a local file named by its sha256,
    checked, so every actor on a node shares one copy and none scores with a damaged one."""
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
    """The test hook of `anomaly.scoring.ray_engine`: die once per marker file, the way
    an OOM-killed actor does, so the tests can show that Ray's retry loses no row."""
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


def score_chunk(
    inspector: Inspector,
    items: Sequence[InputItem],
    shown: Sequence[str],
    image_threshold: float,
    pixel_threshold: float,
    batch_size: int,
    decoder: ThreadPoolExecutor | None = None,
    overlays_dir: str | None = None,
    overlays_mode: OverlayMode | None = "all",
) -> list[Record]:
    """The rows of one chunk, read and decoded here in the actor, next to the model: a
    decoded image is several times the size of its file, so it never travels between
    processes. The chunk's images are all held until its rows are done, so an actor's
    memory is bounded by the chunk's pixels (`anomaly.scoring.budget.plan_chunks`).
    `shown[i]` is how items[i].path is named in error messages (the path as the user
    gave it; the actor may read it through an absolute path)."""
    load = partial(load_input, grid=inspector.info.grid, pictures=overlays_dir is not None)
    loaded = list(decoder.map(load, items)) if decoder is not None else [load(x) for x in items]
    return score_loaded(
        inspector, loaded, (image_threshold, pixel_threshold), batch_size, overlays_dir, overlays_mode, shown
    )


class ChunkScorer:
    """A Ray Data callable class: one actor = one onnxruntime session, loaded in __init__.

    Each input row is one chunk (``labels``, ``paths`` to read, ``shown`` paths for
    messages); the output holds one row per image with the shard schema."""

    def __init__(
        self,
        model: Any,
        model_sha256: str,
        threads: int,
        image_threshold: float,
        pixel_threshold: float,
        batch_size: int,
        overlays_dir: str | None = None,
        overlays_mode: OverlayMode | None = "all",
        decode_threads: int = 2,
        crash_marker: str | None = None,
    ) -> None:
        # spin=False: decoding threads share the cores, so idle inference threads must sleep.
        self.inspector = Inspector(_materialize_model(model, model_sha256), threads=threads, spin=False)
        self.image_threshold, self.pixel_threshold = image_threshold, pixel_threshold
        self.batch_size = batch_size
        self.overlays_dir, self.overlays_mode = overlays_dir, overlays_mode
        self.decoder = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="anomaly-decode")
        self.crash_marker = crash_marker

    def __call__(self, batch: dict[str, Any]) -> Any:
        rows: list[Record] = []
        for labels, paths, shown in zip(batch["labels"], batch["paths"], batch["shown"]):
            items = [InputItem(str(lb), Path(str(p))) for lb, p in zip(labels, paths)]
            rows += score_chunk(
                self.inspector,
                items,
                [str(s) for s in shown],
                self.image_threshold,
                self.pixel_threshold,
                self.batch_size,
                self.decoder,
                self.overlays_dir,
                self.overlays_mode,
            )
        _crash_once(self.crash_marker)
        return records_to_table(rows)
