"""Page logic of the inspection dashboard, kept free of Streamlit so it can be tested.

Everything here works on plain data: uploaded files arrive as (name, bytes) pairs,
results leave as dataclasses, pandas frames and bytes (CSV, ZIP, PNG). The model is
run once per image at its calibrated thresholds; a different threshold re-decides the
verdict and the defect regions from the stored heatmap (`Inspection.with_thresholds`)
without running the model again. Uses only the torch-free runtime.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pandas as pd

from anomaly.inspection.imageio import IMAGE_EXTENSIONS, ImageReadError, decode_image, to_uint8
from anomaly.inspection.inspector import Inspection, Inspector
from anomaly.inspection.overlays import overlay
from anomaly.scoring.inference import batch_then_singly, first_line
from anomaly.scoring.overlay_files import OVERLAY_SUFFIX, overlay_relpath
from anomaly.scoring.schema import CSV_COLUMNS, OVERLAYS_DIR, RESULTS_CSV, RUN_JSON, result_row, table_row
from anomaly.scoring.store import read_run_json

# Relative to the folder the dashboard runs in (`anomaly ui --models DIR` sets the first).
MODELS_DIR = Path(os.environ.get("ANOMALY_MODELS_DIR", "models"))
DEFAULT_MODEL = "default.onnx"
SAMPLES_DIR = Path("sample_images") / "washer" / "test"
# A few good parts and one example of each defect type.
SAMPLE_SELECTION = (
    "good/000.png", "good/001.png", "good/002.png",
    "crack/001.png", "dent/001.png", "missing/001.png", "scratch/001.png", "stain/001.png",
)
DISPLAY_MAX_SIDE = 1024  # pixels; larger images are shown downscaled (inspected at full size)
RESULT_COLUMNS = list(CSV_COLUMNS)  # the dashboard's CSV is `anomaly score`'s
VERDICT_ORDER = {"FAIL": 0, "ERROR": 1, "PASS": 2}

PASS_COLOR = "#1b7f3b"
FAIL_COLOR = "#c62828"
ERROR_COLOR = "#9a5b00"

MODEL_KINDS = {
    "feature_ae": "Feature autoencoder (EfficientNet-Lite0 features)",
    "patch_memory": "Patch memory (nearest normal EfficientNet-Lite0 patch)",
    "ae": "Convolutional autoencoder",
    "vae": "Variational autoencoder",
}


# ----- models ---------------------------------------------------------------------------
def list_models(models_dir: Path = MODELS_DIR) -> list[Path]:
    """The .onnx files in the models folder, default.onnx first, then by name."""
    if not models_dir.is_dir():
        return []
    files = sorted(p for p in models_dir.iterdir() if p.is_file() and p.suffix.lower() == ".onnx")
    return sorted(files, key=lambda p: (p.name != DEFAULT_MODEL, p.name.lower()))


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _format_date(value: str) -> str:
    if not value:
        return "unknown"
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        return value
    offset = d.utcoffset()
    suffix = " UTC" if offset is not None and offset.total_seconds() == 0 else ""
    return d.strftime("%Y-%m-%d %H:%M") + suffix


def _format_number(value: str, digits: int = 3) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return value or "unknown"


def _fit_text(summary: dict[str, str]) -> str:
    """How parts reach the model's square, in an inspector's words."""
    mode, tiles = summary.get("fit_mode") or "letterbox", summary.get("tiles") or "1"
    if mode == "tile" or (mode == "auto" and tiles != "1"):
        return f"cut into tiles, {tiles} across the short side"
    if mode == "auto":
        return "letterbox; long strips cut into tiles"
    return mode


def model_facts(inspector: Inspector) -> list[tuple[str, str]]:
    """`Inspector.info.summary()` as (label, value) rows an inspector can read."""
    s = inspector.info.summary()
    data = s.get("train_data") or ""
    trained_on = PurePosixPath(data.replace("\\", "/")).name if data else "unknown"
    count = s.get("train_count")
    if count:
        trained_on += f" — {count} good images"
        if s.get("train_image_sizes"):
            trained_on += f", {s['train_image_sizes'].replace('x', ' × ')} px"
    size = s.get("input_size")
    return [
        ("Trained on", trained_on),
        ("Data folder", data or "unknown"),
        ("Model type", MODEL_KINDS.get(s.get("model_kind", ""), s.get("model_kind") or "unknown")),
        ("Input size", f"{size} × {size} px ({_fit_text(s)})" if size else "unknown"),
        ("Image threshold", _format_number(s.get("image_threshold", ""))),
        ("Pixel threshold", _format_number(s.get("pixel_threshold", ""))),
        ("Trained", _format_date(s.get("trained", ""))),
        ("Exported", _format_date(s.get("created", ""))),
        ("Software version", s.get("project_version") or "unknown"),
    ]


# ----- inspecting uploads ---------------------------------------------------------------
@dataclass
class Item:
    """One uploaded file: either an error, or the image with its inspection at the
    model's calibrated thresholds plus downscaled copies for display."""

    name: str
    digest: str
    error: str | None = None
    image: np.ndarray | None = None  # uint8 RGB, full resolution
    inspection: Inspection | None = None  # at the calibrated thresholds
    display_image: np.ndarray | None = None  # uint8 RGB, longest side <= DISPLAY_MAX_SIDE
    display_heatmap: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.inspection is not None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the original image."""
        assert self.image is not None
        return self.image.shape[1], self.image.shape[0]

    @property
    def downscaled(self) -> bool:
        return self.display_image is not None and self.image is not None and self.display_image.shape != self.image.shape

    def at(self, image_threshold: float) -> Inspection:
        """The verdict, mask and regions at another image threshold (no model run)."""
        assert self.inspection is not None
        return self.inspection.with_thresholds(image_threshold=image_threshold)


def display_size(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(array: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    h, w = array.shape[:2]
    dw, dh = display_size(w, h, max_side)
    if (dw, dh) == (w, h):
        return array
    return cv2.resize(array, (dw, dh), interpolation=cv2.INTER_AREA)


def inspect_files(inspector: Inspector, files: Sequence[tuple[str, bytes]], chunk: int = 8, progress=None) -> list[Item]:
    """Decode and inspect uploaded files at full resolution. A file that cannot be read
    (or inspected) becomes an error item naming it; the others proceed."""
    items: list[Item] = []
    decoded: list[tuple[Item, np.ndarray]] = []
    for name, data in files:
        item = Item(name=name, digest=digest(data))
        try:
            img = decode_image(data, name)
        except ImageReadError as exc:
            item.error = str(exc)
        except Exception as exc:  # any decoder failure is this file's problem only
            item.error = f"{name}: not a readable image ({type(exc).__name__})"
        else:
            decoded.append((item, img))
        items.append(item)

    def inspect(part: list[tuple[Item, np.ndarray]]) -> list[None]:
        results = inspector.inspect_batch([img for _, img in part], names=[item.name for item, _ in part])
        for (item, img), insp in zip(part, results):
            item.image = to_uint8(img)
            item.inspection = insp
            item.display_image = downscale(item.image)
            item.display_heatmap = downscale(insp.heatmap)
        return [None] * len(part)

    def failed(one: tuple[Item, np.ndarray], exc: Exception) -> None:
        one[0].error = f"{one[0].name}: the model could not inspect this image ({first_line(exc, 160)})"

    batch_then_singly(decoded, chunk, inspect, failed, progress)
    return items


def display_overlay(item: Item, insp: Inspection) -> np.ndarray:
    """Heatmap and defect outlines at display resolution (mask from the full-size decision)."""
    assert item.display_image is not None and item.display_heatmap is not None
    h, w = item.display_image.shape[:2]
    mask = insp.mask
    if mask.shape != (h, w):
        mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return overlay(item.display_image, item.display_heatmap, mask, insp.pixel_threshold)


def regions_frame(insp: Inspection, image_size: tuple[int, int]) -> pd.DataFrame:
    """Defect regions, largest first, in original-image pixels (compact, for display)."""
    w, h = image_size
    rows = [
        {
            "#": i + 1,
            "Position": f"{r.x}, {r.y}",
            "Size": f"{r.width} × {r.height}",
            "Area (px)": r.area,
            "Area %": round(100.0 * r.area / max(1, w * h), 2),
            "Peak": round(r.peak, 3),
        }
        for i, r in enumerate(insp.regions)
    ]
    return pd.DataFrame(rows, columns=["#", "Position", "Size", "Area (px)", "Area %", "Peak"])


def decide(items: Sequence[Item], threshold: float) -> list[Inspection | None]:
    return [it.at(threshold) if it.ok else None for it in items]


def results_frame(items: Sequence[Item], decided: Sequence[Inspection | None], calibrated: float) -> pd.DataFrame:
    """One row per uploaded file, in upload order (columns of `anomaly score` plus
    `changed`: the verdict differs from the one at the calibrated threshold)."""
    rows = []
    for it, insp in zip(items, decided):
        row = table_row(result_row(it.name, (it.error or "") if insp is None else insp))
        if insp is None:  # numeric columns for the table and chart: no score, no regions
            row.update(score=math.nan, regions=0, largest_region_area=0, changed=False)
        else:
            row["changed"] = insp.verdict != ("FAIL" if insp.score >= calibrated else "PASS")
        rows.append(row)
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "changed"])


def verdict_changes(frame: pd.DataFrame) -> tuple[int, int, int]:
    """(changed, now FAIL, now PASS) relative to the calibrated threshold."""
    changed = frame.loc[frame["changed"].astype(bool)]
    return len(changed), int((changed["verdict"] == "FAIL").sum()), int((changed["verdict"] == "PASS").sum())


def results_csv(frame: pd.DataFrame) -> bytes:
    return frame[RESULT_COLUMNS].to_csv(index=False, float_format="%.6f").encode()


def _safe_member(name: str) -> str:
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    return "/".join(parts) or "image"


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("could not encode PNG")
    return buf.tobytes()


def overlays_zip(items: Sequence[Item], threshold: float, calibrated: float) -> bytes:
    """ZIP of full-resolution overlay PNGs (overlays/<name>.png) plus results.csv, named
    as in a folder written by `anomaly score`."""
    decided = decide(items, threshold)
    buf = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for it, insp in zip(items, decided):
            if insp is None or it.image is None:
                continue
            member = f"{OVERLAYS_DIR}/" + str(PurePosixPath(_safe_member(it.name)).with_suffix(".png"))
            base, k = member[:-4], 2
            while member in used:
                member, k = f"{base}_{k}.png", k + 1
            used.add(member)
            zf.writestr(member, png_bytes(insp.overlay(it.image)))
        zf.writestr(RESULTS_CSV, results_csv(results_frame(items, decided, calibrated)))
    return buf.getvalue()


def sample_files(selection: Iterable[str] = SAMPLE_SELECTION, root: Path = SAMPLES_DIR) -> list[tuple[str, bytes]]:
    """The bundled example images as (name, bytes), named like 'crack/001.png'."""
    out = []
    for rel in selection:
        path = root / rel
        if path.is_file():
            out.append((rel, path.read_bytes()))
    return out


# ----- reviewing a folder scored by `anomaly score` --------------------------------------
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
            parts.append(f"started {_format_date(str(self.run['started']))}")
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
        table = pd.read_csv(csv, dtype={"path": str, "verdict": str, "error": str}, keep_default_na=False,
                            na_values={"score": ["", "nan", "NaN"]})
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
    out = table.assign(_rank=rank).sort_values(["_rank", "score", "path"], ascending=[True, False, True],
                                              na_position="last", kind="mergesort")
    return out.drop(columns="_rank").reset_index(drop=True)


def overlay_relpaths(rel: str) -> list[PurePosixPath]:
    """Where `anomaly score --overlays` may have saved the overlay of a results.csv
    path, below overlays/: '<path>.jpg' (current) or '<path>.png' (earlier versions)."""
    return [overlay_relpath(rel, OVERLAY_SUFFIX), overlay_relpath(rel, ".png")]


def review_image(run: ScoredRun, rel: str) -> tuple[Path | None, str]:
    """The picture to show for one row: the saved overlay if present, else the
    original image. Returns (path or None, "overlay" | "original" | "missing")."""
    for candidate in overlay_relpaths(rel):
        overlay_path = run.folder / OVERLAYS_DIR / Path(candidate)
        if overlay_path.is_file():
            return overlay_path, "overlay"
    rel_path = Path(rel)
    bases = [b for b in (run.input_dir, run.folder) if b is not None]
    if run.input_dir is not None and run.input_dir.is_file():  # a single file or a list of files was scored
        bases.insert(0, run.input_dir.parent)
    candidates = [rel_path] if rel_path.is_absolute() else [b / rel_path for b in bases]
    for cand in candidates:
        if cand.is_file() and cand.suffix.lower() in IMAGE_EXTENSIONS:
            return cand, "original"
    return None, "missing"
