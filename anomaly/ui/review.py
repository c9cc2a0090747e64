"""Reviewing a folder written by `anomaly score`: its table, failures first, and the
pictures of one row (the clean original, the saved overlay, the defect mask or boxes).

No Streamlit here. Pictures are read at display size and kept in a small cache keyed by
file, size and time, so stepping through a run of huge photos decodes each once.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import pandas as pd

from anomaly.inspection.imageio import IMAGE_EXTENSIONS, ImageReadError
from anomaly.scoring.overlay_files import MASK_SUFFIX, OVERLAY_SUFFIX, overlay_relpath
from anomaly.scoring.schema import MASKS_DIR, OVERLAYS_DIR, RESULTS_CSV, RESULTS_JSONL, RUN_JSON
from anomaly.scoring.store import read_run_json
from anomaly.ui.model_info import format_date
from anomaly.ui.tables import RESULT_COLUMNS, VERDICT_ORDER
from anomaly.ui.views import DISPLAY_MAX_SIDE, display_decode


class ReviewError(ValueError):
    """A folder that cannot be reviewed; the message says why and names it."""


@dataclass
class ScoredRun:
    folder: Path
    table: pd.DataFrame  # sorted: failures first, then errors, then passes; highest score first
    run: dict = field(default_factory=dict)

    @property
    def input_dir(self) -> Path | None:
        value = self.run.get("input")
        return Path(value) if value else None

    def describe(self) -> str:
        """One line about the run: what was scored, with which model and threshold, when."""
        parts = []
        if self.run.get("input"):
            parts.append(f"Scored `{self.run['input']}`")
        if self.run.get("model"):
            parts.append(f"model `{PurePosixPath(str(self.run['model']).replace(chr(92), '/')).name}`")
        if isinstance(self.run.get("image_threshold"), (int, float)):
            parts.append(f"threshold {self.run['image_threshold']:.2f}")
        if self.run.get("started"):
            parts.append(f"started {format_date(str(self.run['started']))}")
        return " · ".join(parts)

    def counts(self) -> dict[str, int]:
        c = self.table["verdict"].value_counts()
        return {v: int(c.get(v, 0)) for v in ("FAIL", "ERROR", "PASS")}


def load_scored_folder(folder: str | Path) -> ScoredRun:
    raw = str(folder).strip().strip('"').strip("'")
    if not raw:
        raise ReviewError("enter the path of a folder written by `anomaly score`")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ReviewError(f"{path}: no such folder")
    csv = path / RESULTS_CSV
    if not csv.is_file():
        raise ReviewError(f"{path}: no {RESULTS_CSV} here; is this the output folder of `anomaly score`?")
    try:
        table = pd.read_csv(
            csv,
            dtype={"path": str, "verdict": str, "error": str},
            keep_default_na=False,
            na_values={"score": ["", "nan", "NaN"]},
        )
    except Exception as exc:
        raise ReviewError(f"{csv}: cannot read ({str(exc).splitlines()[0][:160]})") from exc
    missing = [c for c in ("path", "score", "verdict") if c not in table.columns]
    if missing:
        raise ReviewError(f"{csv}: missing column(s) {', '.join(missing)}")
    for col, default in (("regions", 0), ("largest_region_area", 0), ("error", "")):
        if col not in table.columns:
            table[col] = default
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    for col in ("regions", "largest_region_area"):
        table[col] = pd.to_numeric(table[col], errors="coerce").fillna(0).astype(int)
    table["verdict"] = table["verdict"].str.strip().str.upper()
    return ScoredRun(path, sort_for_review(table[RESULT_COLUMNS]), read_run_json(path / RUN_JSON) or {})


def sort_for_review(table: pd.DataFrame) -> pd.DataFrame:
    """Failures first, then errors, then passes; within each, highest score first."""
    rank = table["verdict"].map(VERDICT_ORDER).fillna(len(VERDICT_ORDER))
    out = table.assign(_rank=rank).sort_values(
        ["_rank", "score", "path"], ascending=[True, False, True], na_position="last", kind="mergesort"
    )
    return out.drop(columns="_rank").reset_index(drop=True)


def overlay_relpaths(rel: str) -> list[PurePosixPath]:
    """Where `anomaly score --overlays` may have saved the overlay of a results.csv
    path, below overlays/: '<path>.jpg' (current) or '<path>.png' (earlier versions)."""
    return [overlay_relpath(rel, OVERLAY_SUFFIX), overlay_relpath(rel, ".png")]


def review_image(run: ScoredRun, rel: str) -> tuple[Path | None, str]:
    """The saved overlay if present, else the original: (path or None, "overlay" | "original" | "missing")."""
    overlay_path = saved_overlay(run, rel)
    if overlay_path is not None:
        return overlay_path, "overlay"
    original = original_image(run, rel)
    return (original, "original") if original is not None else (None, "missing")


def original_image(run: ScoredRun, rel: str) -> Path | None:
    """The scored image itself (below the run's input), if it is still there."""
    rel_path = Path(rel)
    bases = [b for b in (run.input_dir, run.folder) if b is not None]
    if run.input_dir is not None and run.input_dir.is_file():  # a single file or a list of files was scored
        bases.insert(0, run.input_dir.parent)
    candidates = [rel_path] if rel_path.is_absolute() else [b / rel_path for b in bases]
    return next((c for c in candidates if c.is_file() and c.suffix.lower() in IMAGE_EXTENSIONS), None)


def saved_overlay(run: ScoredRun, rel: str) -> Path | None:
    for candidate in overlay_relpaths(rel):
        path = run.folder / OVERLAYS_DIR / Path(candidate)
        if path.is_file():
            return path
    return None


def saved_mask(run: ScoredRun, rel: str) -> Path | None:
    path = run.folder / MASKS_DIR / Path(overlay_relpath(rel, MASK_SUFFIX))
    return path if path.is_file() else None


def records(run: ScoredRun) -> dict[str, dict[str, Any]]:
    """results.jsonl by path (the last record of a path wins, as a resumed run writes)."""
    return _records(run.folder / RESULTS_JSONL, *_stamp(run.folder / RESULTS_JSONL))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return 0, 0
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def _records(path: Path, mtime_ns: int, size: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not size:
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash; the CSV still lists the row
            if isinstance(rec, dict) and "path" in rec:
                out[str(rec["path"])] = rec
    return out


@dataclass(frozen=True)
class Picture:
    """An image file at display size, with the original's (width, height)."""

    rgb: np.ndarray
    size: tuple[int, int]
    transparent: bool = False


def load_picture(path: Path, max_side: int = DISPLAY_MAX_SIDE) -> Picture:
    """A file at display size, decoded once per (file, time, size) in this process."""
    return _picture(path, *_stamp(path), max_side)


@functools.lru_cache(maxsize=24)  # display-size pictures only: 24 x 3 MB at most
def _picture(path: Path, mtime_ns: int, size: int, max_side: int) -> Picture:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror})") from exc
    rgb, original, transparent = display_decode(data, str(path), max_side)
    rgb.setflags(write=False)
    return Picture(rgb, original, transparent)


def load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        return None
    return cv2.resize((raw > 0).astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA) > 0


def region_boxes(record: dict[str, Any] | None, scale: float) -> list[tuple[int, int, int, int]]:
    """A record's region boxes in a picture shrunk by `scale` (display / original)."""
    regions = (record or {}).get("regions") or []
    return [
        (round(r["x"] * scale), round(r["y"] * scale), round(r["width"] * scale), round(r["height"] * scale))
        for r in regions
        if isinstance(r, dict) and {"x", "y", "width", "height"} <= r.keys()
    ]
