"""Parquet shards: the Ray engine's record of truth, ``OUT_DIR/shards/*.parquet``.

Each shard holds the results.jsonl records of one block of rows (`RECORD_KEYS`, regions
as JSON text) and, in its schema metadata, the model sha256 and thresholds it was
scored with. A shard is written under a temporary name, fsynced and renamed, so it is
either complete or absent. pyarrow is imported only when a shard is touched.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomaly.scoring.schema import RECORD_KEYS, Record
from anomaly.scoring.store import RESTART_HINT, RunInfo, complete_files, fsync_dir

SHARDS_DIR = "shards"
SHARD_PATTERN = "*.parquet"
SHARD_META_PREFIX = "anomaly."

log = logging.getLogger(__name__)


def _shard_schema(run: RunInfo | None = None) -> Any:
    import pyarrow as pa

    schema = pa.schema(
        [
            ("path", pa.string()),
            ("score", pa.float64()),
            ("verdict", pa.string()),
            ("image_threshold", pa.float64()),
            ("pixel_threshold", pa.float64()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("regions", pa.string()),  # JSON list, as in results.jsonl
            ("error", pa.string()),
        ]
    )
    if run is not None:
        schema = schema.with_metadata(
            {
                SHARD_META_PREFIX + k: str(v)
                for k, v in (
                    ("model_sha256", run.model_sha256),
                    ("image_threshold", repr(run.image_threshold)),
                    ("pixel_threshold", repr(run.pixel_threshold)),
                    ("input", run.input),
                )
            }
        )
    return schema


def records_to_table(records: Sequence[Record], run: RunInfo | None = None) -> Any:
    """results.jsonl records as a pyarrow Table with the shard schema."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {k: [] for k in RECORD_KEYS}
    for r in records:
        for k in RECORD_KEYS:
            cols[k].append(json.dumps(r.get("regions") or []) if k == "regions" else r.get(k))
    return pa.Table.from_pydict(cols, schema=_shard_schema(run))


def table_to_records(table: Any) -> list[Record]:
    """The inverse of `records_to_table`: records equal to what results.jsonl holds."""
    out = []
    for row in table.select(list(RECORD_KEYS)).to_pylist():
        row["regions"] = json.loads(row["regions"]) if row["regions"] else []
        out.append({k: row[k] for k in RECORD_KEYS})
    return out


def write_shard(shards_dir: Path, records: Sequence[Record], run: RunInfo, name: str | None = None) -> Path:
    """Write one Parquet shard atomically: temporary name, fsync, rename, fsync the folder."""
    import pyarrow.parquet as pq

    shards_dir.mkdir(parents=True, exist_ok=True)
    name = (
        name or f"part-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
    )
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
    fsync_dir(shards_dir)
    return final


def shard_files(out_dir: str | Path) -> list[Path]:
    """The complete shards of OUT_DIR (temporary files of an interrupted write excluded)."""
    return complete_files(Path(out_dir) / SHARDS_DIR, SHARD_PATTERN)


def _shard_run(meta: dict[bytes, bytes] | None) -> dict[str, Any]:
    """What a shard's metadata says about its run, in run.json's keys and types."""
    text = {k.decode(): v.decode() for k, v in (meta or {}).items()}
    out: dict[str, Any] = {}
    for key in ("model_sha256", "image_threshold", "pixel_threshold"):
        raw = text.get(SHARD_META_PREFIX + key)
        if raw is not None:
            out[key] = raw if key == "model_sha256" else float(raw)
    return out


def read_shards(out_dir: str | Path, run: RunInfo | None = None) -> dict[str, Record]:
    """All rows of OUT_DIR's shards, one per path (the first shard, by name, wins).

    An unreadable shard is renamed to ``<name>.unreadable`` (its images are then scored
    again); a shard written for another model or thresholds than `run` raises ValueError."""
    import pyarrow.parquet as pq

    records: dict[str, Record] = {}
    for shard in shard_files(out_dir):
        try:
            table = pq.read_table(shard)
        except Exception as exc:  # any damage: score those images again
            log.warning("%s: unreadable shard (%s); its images will be scored again", shard, exc)
            os.replace(shard, shard.with_name(shard.name + ".unreadable"))
            continue
        if run is not None:
            diffs = run.mismatches(_shard_run(table.schema.metadata), partial=True)
            if diffs:
                raise ValueError(f"{shard}: rows of a different run ({'; '.join(diffs)}); {RESTART_HINT}")
        for rec in table_to_records(table):
            records.setdefault(rec["path"], rec)
    return records
