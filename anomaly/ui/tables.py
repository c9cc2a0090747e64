"""The dashboard's results table and its exports: the results frame, CSV and the overlays ZIP.

One row per distinct uploaded file, with `anomaly score`'s columns (readers of
results.csv still work) and the context the export was decided with (threshold, model,
date, operator). Free of Streamlit so it can be tested.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import PurePosixPath

import cv2
import numpy as np
import pandas as pd

from anomaly.inspection.inspector import Inspection
from anomaly.scoring.schema import CSV_COLUMNS, OVERLAYS_DIR, RESULTS_CSV, result_row, table_row
from anomaly.ui.logic import Item, decide, item_view

RESULT_COLUMNS = list(CSV_COLUMNS)  # the dashboard's CSV is `anomaly score`'s
VERDICT_ORDER = {"FAIL": 0, "ERROR": 1, "PASS": 2}


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
