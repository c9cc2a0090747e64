"""Page logic of the inspection dashboard (Inspect and Batch), kept free of Streamlit so it can be tested.

Everything here works on plain data: uploaded files arrive as (name, bytes) pairs,
results leave as dataclasses, pandas frames and bytes (CSV, ZIP, PNG). The model is
run once per image at its calibrated thresholds; a different threshold re-decides the
verdict and the defect regions from the stored heatmap (`Inspection.with_thresholds`)
without running the model again. Uses only the torch-free runtime.

Memory: a session keeps no full-resolution copy of a large upload. The picture is kept
at display size and the heatmap at no more than ANALYSIS_MAX_SIDE; regions found on
that heatmap are scaled back to the original's pixels. The score, and so the verdict,
comes from the model's run on the full image and does not change.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pandas as pd

from anomaly.inspection.imageio import ImageReadError, decode_image, to_uint8
from anomaly.inspection.inspector import Inspection, Inspector
from anomaly.inspection.regions import Region
from anomaly.scoring.inference import batch_then_singly, first_line
from anomaly.scoring.schema import CSV_COLUMNS, OVERLAYS_DIR, RESULTS_CSV, result_row, table_row
from anomaly.ui.views import compose

# Relative to the folder the dashboard runs in (`anomaly ui --models DIR` sets the first).
MODELS_DIR = Path(os.environ.get("ANOMALY_MODELS_DIR", "models"))
DEFAULT_MODEL = "default.onnx"
SAMPLES_DIR = Path("sample_images") / "washer" / "test"
# A few good parts and one example of each defect type.
SAMPLE_SELECTION = (
    "good/000.png",
    "good/001.png",
    "good/002.png",
    "crack/001.png",
    "dent/001.png",
    "missing/001.png",
    "scratch/001.png",
    "stain/001.png",
)
DISPLAY_MAX_SIDE = 1024  # pixels; larger images are shown downscaled (inspected at full size)
ANALYSIS_MAX_SIDE = 2048  # pixels; heatmaps kept for re-deciding at most this size
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


def format_date(value: str) -> str:
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
        ("Trained", format_date(s.get("trained", ""))),
        ("Exported", format_date(s.get("created", ""))),
        ("Software version", s.get("project_version") or "unknown"),
    ]


# ----- uploads: names, duplicates, unreadable files ------------------------------------
@dataclass(frozen=True)
class Upload:
    """One distinct uploaded file: `name` is unique in the batch (its relative path when a
    folder was uploaded); `also` lists other names the same bytes were uploaded under."""

    name: str
    data: bytes
    digest: str
    also: tuple[str, ...] = ()


def unique_uploads(files: Sequence[tuple[str, bytes]]) -> list[Upload]:
    """Identical files (same bytes) become one entry; different files that share a name
    (001.png from two folders) get ' (2)', ' (3)' so every row names one part."""
    by_digest: dict[str, int] = {}
    names: list[str] = []
    out: list[Upload] = []
    for name, data in files:
        d = digest(data)
        if d in by_digest:
            k = by_digest[d]
            if name != out[k].name and name not in out[k].also:
                out[k] = replace(out[k], also=(*out[k].also, name))
            continue
        label, n = name, 2
        while label in names:
            label, n = f"{name} ({n})", n + 1
        names.append(label)
        by_digest[d] = len(out)
        out.append(Upload(label, data, d))
    return out


IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def image_kind(data: bytes) -> str | None:
    return next((kind for magic, kind in IMAGE_SIGNATURES if data.startswith(magic)), None)


def read_problem(name: str, data: bytes) -> str | None:
    """Why a file cannot be inspected, told apart: empty, cut short, or not an image;
    None when it looks whole. A PNG without its end chunk, or a JPEG without its end
    marker, decodes with a grey remainder that the model would flag as a defect."""
    if not data:
        return f"{name}: empty file (0 bytes); the upload or copy may have failed"
    kind = image_kind(data)
    if kind is None:
        return f"{name}: not an image file (expected PNG, JPEG, BMP or TIFF)"
    tail = data.rstrip(b"\x00\r\n ")
    if (kind == "PNG" and b"IEND" not in tail[-12:]) or (kind == "JPEG" and not tail.endswith(b"\xff\xd9")):
        return f"{name}: truncated {kind} file ({len(data)} bytes; the end of the image is missing)"
    return None


# ----- inspecting uploads ---------------------------------------------------------------
@dataclass
class Item:
    """One distinct uploaded file: an error, or its inspection at the model's calibrated
    thresholds with a display-size picture. The heatmap is kept at no more than
    ANALYSIS_MAX_SIDE (`scale` = original pixels per kept pixel)."""

    name: str
    digest: str
    error: str | None = None
    inspection: Inspection | None = None  # at the calibrated thresholds, heatmap at kept size
    display_image: np.ndarray | None = None  # uint8 RGB, longest side <= DISPLAY_MAX_SIDE
    original_size: tuple[int, int] = (0, 0)  # (width, height)
    scale: float = 1.0
    transparent: bool = False  # had alpha: shown and inspected composited on black
    also: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and self.inspection is not None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the original image."""
        return self.original_size

    @property
    def downscaled(self) -> bool:
        return self.display_image is not None and self.display_image.shape[1] != self.original_size[0]

    def at(self, image_threshold: float) -> Inspection:
        """The verdict, mask and regions at another image threshold (no model run)."""
        assert self.inspection is not None
        return self.inspection.with_thresholds(image_threshold=image_threshold)

    def regions(self, insp: Inspection) -> list[Region]:
        """`insp`'s regions in original-image pixels."""
        s = self.scale
        if s == 1.0:
            return list(insp.regions)
        w, h = self.original_size
        return [
            Region(
                min(round(r.x * s), w - 1),
                min(round(r.y * s), h - 1),
                max(1, round(r.width * s)),
                max(1, round(r.height * s)),
                max(1, round(r.area * s * s)),
                r.peak,
            )
            for r in insp.regions
        ]


def display_size(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(array: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    h, w = array.shape[:2]
    dw, dh = display_size(w, h, max_side)
    if (dw, dh) == (w, h):
        return array
    return cv2.resize(array, (dw, dh), interpolation=cv2.INTER_AREA)


def _kept(item: Item, image: np.ndarray, insp: Inspection) -> None:
    """Keep only small copies: the display picture and a capped heatmap (and its mask)."""
    h, w = image.shape[:2]
    item.original_size = (w, h)
    item.display_image = to_uint8(downscale(image))
    heat = downscale(insp.heatmap, ANALYSIS_MAX_SIDE)
    item.scale = w / heat.shape[1]
    if heat is not insp.heatmap:
        insp = replace(insp, heatmap=heat).with_thresholds()
    item.inspection = insp


def has_alpha(data: bytes) -> bool:
    """PNG colour types 4 and 6 (grey or RGB with alpha); the only common alpha format."""
    return data.startswith(b"\x89PNG") and len(data) > 25 and data[25] in (4, 6)


def inspect_files(
    inspector: Inspector,
    files: Sequence[tuple[str, bytes]],
    chunk: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[Item]:
    """De-duplicate, decode and inspect uploaded files at full resolution. A file that
    cannot be read (or inspected) becomes an error item naming it; the others proceed."""
    items: list[Item] = []
    decoded: list[tuple[Item, np.ndarray]] = []
    for up in unique_uploads(files):
        item = Item(name=up.name, digest=up.digest, also=up.also, transparent=has_alpha(up.data))
        problem = read_problem(up.name, up.data)
        if problem:
            item.error = problem
        else:
            try:
                decoded.append((item, decode_image(up.data, up.name)))
            except ImageReadError as exc:
                item.error = str(exc)
            except Exception as exc:  # any decoder failure is this file's problem only
                item.error = f"{up.name}: not a readable image ({type(exc).__name__})"
        items.append(item)

    def inspect(part: list[tuple[Item, np.ndarray]]) -> list[None]:
        results = inspector.inspect_batch([img for _, img in part], names=[item.name for item, _ in part])
        for (item, img), insp in zip(part, results):
            _kept(item, img, insp)
        return [None] * len(part)

    def failed(one: tuple[Item, np.ndarray], exc: Exception) -> None:
        one[0].error = f"{one[0].name}: the model could not inspect this image ({first_line(exc, 160)})"

    batch_then_singly(decoded, chunk, inspect, failed, progress)
    decoded.clear()  # the full-resolution float images go now, not when the page returns
    return items


def item_view(
    item: Item, insp: Inspection, view: str = "heatmap", opacity: float = 0.55, max_side: int = DISPLAY_MAX_SIDE
) -> np.ndarray:
    """One view (original | heatmap | outline) at display size."""
    assert item.display_image is not None
    image = item.display_image if max_side == DISPLAY_MAX_SIDE else downscale(item.display_image, max_side)
    return compose(image, insp.heatmap, insp.mask, insp.pixel_threshold, insp.image_threshold, view, opacity)  # type: ignore[arg-type]


def region_rows(regions: Sequence[Region], image_size: tuple[int, int]) -> list[dict[str, object]]:
    """Defect regions, largest first, in original-image pixels: where, how big, how strong."""
    w, h = image_size
    return [
        {
            "#": i + 1,
            "Position (x, y)": f"{r.x}, {r.y}",
            "Size": f"{r.width} × {r.height}",
            "Area %": round(100.0 * r.area / max(1, w * h), 2),
            "Peak": round(r.peak, 3),
        }
        for i, r in enumerate(regions)
    ]


def decide(items: Sequence[Item], threshold: float) -> list[Inspection | None]:
    return [it.at(threshold) if it.ok else None for it in items]


def results_frame(items: Sequence[Item], decided: Sequence[Inspection | None], calibrated: float) -> pd.DataFrame:
    """One row per distinct uploaded file, in upload order (columns of `anomaly score` plus
    `changed`: the verdict differs from the one at the calibrated threshold)."""
    rows = []
    for it, insp in zip(items, decided):
        if insp is None:
            row = table_row(result_row(it.name, it.error or ""))
            row.update(score=math.nan, regions=0, largest_region_area=0, changed=False)
        else:
            w, h = it.size
            row = table_row(result_row(it.name, replace(insp, regions=it.regions(insp)), w, h))
            row["changed"] = insp.verdict != ("FAIL" if insp.score >= calibrated else "PASS")
        rows.append(row)
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "changed"])


def verdict_changes(frame: pd.DataFrame) -> tuple[int, int, int]:
    """(changed, now FAIL, now PASS) relative to the calibrated threshold."""
    changed = frame.loc[frame["changed"].astype(bool)]
    return len(changed), int((changed["verdict"] == "FAIL").sum()), int((changed["verdict"] == "PASS").sum())


# ----- exports --------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportContext:
    """What an exported row was decided with, so an export at 0.55 never reads as one at 1.00."""

    threshold: float
    model: str
    model_digest: str
    operator: str = ""
    date: str = field(default_factory=lambda: datetime.now().astimezone().isoformat(timespec="seconds"))

    def columns(self) -> dict[str, str]:
        return {
            "threshold": f"{self.threshold:.6f}",
            "model": self.model,
            "model_digest": self.model_digest,
            "date": self.date,
            "operator": self.operator,
        }


CONTEXT_COLUMNS = ("threshold", "model", "model_digest", "date", "operator")


def results_csv(frame: pd.DataFrame, context: ExportContext) -> bytes:
    """`anomaly score`'s columns first (readers of results.csv still work), then the
    context of the export on every row (a row copied into another sheet keeps it)."""
    out = frame[RESULT_COLUMNS].copy()
    for k, v in context.columns().items():
        out[k] = v
    return out.to_csv(index=False, float_format="%.6f").encode()


def _safe_member(name: str) -> str:
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    return "/".join(parts) or "image"


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("could not encode PNG")
    return buf.tobytes()


def overlays_zip(items: Sequence[Item], context: ExportContext, calibrated: float) -> bytes:
    """ZIP of overlay PNGs (overlays/<name>.png, heatmap and outlines, at up to
    DISPLAY_MAX_SIDE: the session keeps no full-resolution copy) plus results.csv, named
    as in a folder written by `anomaly score`."""
    decided = decide(items, context.threshold)
    buf = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for it, insp in zip(items, decided):
            if insp is None:
                continue
            member = f"{OVERLAYS_DIR}/" + str(PurePosixPath(_safe_member(it.name)).with_suffix(".png"))
            base, k = member[:-4], 2
            while member in used:
                member, k = f"{base}_{k}.png", k + 1
            used.add(member)
            zf.writestr(member, png_bytes(item_view(it, insp)))
        zf.writestr(RESULTS_CSV, results_csv(results_frame(items, decided, calibrated), context))
    return buf.getvalue()


def sample_files(selection: Iterable[str] = SAMPLE_SELECTION, root: Path = SAMPLES_DIR) -> list[tuple[str, bytes]]:
    """The bundled example images as (name, bytes), named like 'crack/001.png'."""
    out = []
    for rel in selection:
        path = root / rel
        if path.is_file():
            out.append((rel, path.read_bytes()))
    return out
