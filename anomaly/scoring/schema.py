"""What a scored folder holds: its file names, the record of one image, and the CSV row.

Written once here so that the local engine, the Ray engine and the dashboard read and
write the same files with the same columns. A folder written by `anomaly score`:

- ``results.jsonl``: one record per image (`RECORD_KEYS`). The record of truth.
- ``results.csv``: the same rows for spreadsheets (`CSV_COLUMNS`), always rebuildable
  from results.jsonl.
- ``run.json``: which model, thresholds and input the rows belong to (`store.RunInfo`).
- ``overlays/`` and ``masks/``: pictures for people, when asked for (`overlay_files`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from anomaly.inspection.inspector import Inspection

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
RUN_JSON = "run.json"
OVERLAYS_DIR = "overlays"
MASKS_DIR = "masks"
LOCK_FILE = ".score.lock"

RECORD_KEYS = ("path", "score", "verdict", "image_threshold", "pixel_threshold", "width", "height", "regions", "error")
CSV_COLUMNS = ("path", "score", "verdict", "regions", "largest_region_area", "error")

Record = dict[str, Any]  # one results.jsonl line


def printable(text: str) -> str:
    """Text as the results files write it: valid UTF-8 whatever the file system gave.

    A file name that is not valid UTF-8 (Latin-1 bytes from a Windows share) reaches
    Python with each undecodable byte as a lone surrogate, which no UTF-8 file can
    hold; each such byte is written as a backslash escape (caf\\xe9.png), so the row
    still names the file exactly and the same name gives the same row on a re-run.
    Text that is valid already is returned unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def result_row(
    path_label: str,
    inspection_or_error: Inspection | BaseException | str,
    width: int | None = None,
    height: int | None = None,
    *,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
) -> Record:
    """The results.jsonl record for one image. An Inspection gives a PASS/FAIL row
    (width/height default to its heatmap's); an exception or message an ERROR row, which
    carries the thresholds given as keywords."""
    if isinstance(inspection_or_error, Inspection):
        insp = inspection_or_error
        h, w = insp.heatmap.shape[:2]
        return {
            "path": printable(path_label),
            "score": round(float(insp.score), 6),
            "verdict": insp.verdict,
            "image_threshold": float(insp.image_threshold),
            "pixel_threshold": float(insp.pixel_threshold),
            "width": int(width if width is not None else w),
            "height": int(height if height is not None else h),
            "regions": [r.to_dict() for r in insp.regions],
            "error": None,
        }
    err = inspection_or_error
    msg = (str(err) or type(err).__name__) if isinstance(err, BaseException) else str(err)
    return {
        "path": printable(path_label),
        "score": None,
        "verdict": "ERROR",
        "image_threshold": None if image_threshold is None else float(image_threshold),
        "pixel_threshold": None if pixel_threshold is None else float(pixel_threshold),
        "width": None if width is None else int(width),
        "height": None if height is None else int(height),
        "regions": [],
        "error": printable(msg),
    }


def table_row(record: Record) -> dict[str, Any]:
    """A record reduced to the CSV_COLUMNS, typed: the region counts are None on an ERROR
    row (nothing was measured), the score None where there is none."""
    error_row = record.get("verdict") == "ERROR"
    regions = record.get("regions") or []
    return {
        "path": str(record["path"]),
        "score": record.get("score"),
        "verdict": str(record.get("verdict", "")),
        "regions": None if error_row else len(regions),
        "largest_region_area": None if error_row else max((int(r["area"]) for r in regions), default=0),
        "error": record.get("error") or "",
    }


def csv_row(record: Record) -> list[str]:
    """A results.jsonl record as a results.csv row (CSV_COLUMNS order; empty where None)."""
    row = table_row(record)
    score = row["score"]
    row["score"] = None if score is None else f"{float(score):.6f}"
    return ["" if row[c] is None else str(row[c]) for c in CSV_COLUMNS]


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    """CSV lines as results.csv writes them (newline-terminated, minimal quoting)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def jsonl_text(records: Iterable[Record]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)
