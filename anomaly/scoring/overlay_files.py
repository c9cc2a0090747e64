"""Overlay and mask pictures of a scoring run: which parts get them, names and writing.

``overlays/<label>.jpg`` (heatmap + defect outlines) and ``masks/<label>.png`` (0/255)
mirror the input tree. A name already ending in the suffix keeps it; any other gets it
appended (``a.png`` -> overlay ``a.png.jpg``, mask ``a.png``; ``a.jpg`` -> overlay
``a.jpg``, mask ``a.jpg.png``), so ``a.jpg`` and ``a.png`` side by side never overwrite
each other.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Literal

import cv2
import numpy as np

from anomaly.inspection.inspector import Inspection
from anomaly.scoring.schema import MASKS_DIR, OVERLAYS_DIR

OverlayMode = Literal["all", "fails"]

OVERLAY_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"
# Overlays are pictures for people: JPEG encodes far faster than PNG, which would
# otherwise hold folder scoring below the model's own speed.
_OVERLAY_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 90]
# Masks must stay exact: lossless 1-bit PNG, which is also the quickest PNG to encode
# and reads back as 0/255.
_MASK_PARAMS = [cv2.IMWRITE_PNG_BILEVEL, 1]


def overlay_mode(overlays: bool | str | None) -> OverlayMode | None:
    """None (no overlays), "all" or "fails" from what a caller passed (True means "all")."""
    mode = "all" if overlays is True else (overlays or None)
    if mode not in (None, "all", "fails"):
        raise ValueError(f"overlays must be all or fails, got {overlays!r}")
    return mode  # type: ignore[return-value]


def wants_overlay(mode: OverlayMode | None, inspection: Inspection) -> bool:
    """ "fails" keeps pictures of failing parts only, what a line usually keeps."""
    return mode == "all" or (mode == "fails" and inspection.verdict == "FAIL")


def overlay_relpath(path_label: str, suffix: str = MASK_SUFFIX) -> PurePosixPath:
    """Where a label's mask (suffix '.png') or overlay (OVERLAY_SUFFIX) goes below
    masks/ or overlays/: the label made relative and safe (no absolute anchor, no
    '..'), with the suffix appended unless it already ends so."""
    parts = [p for p in PurePosixPath(path_label.replace("\\", "/")).parts if p not in ("/", "", ".")]
    parts = ["__" if p == ".." else p.replace(":", "_") for p in parts] or ["image"]
    if not parts[-1].lower().endswith(suffix):
        parts[-1] += suffix
    return PurePosixPath(*parts)


def _write_atomic_image(path: Path, image: np.ndarray, params: list[int]) -> None:
    """uint8 RGB or gray -> file, via a temporary name renamed into place, so a reader
    never sees half a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        # encoded here and written by Python: OpenCV's own file writing crashes the
        # process on a path that is not valid UTF-8
        ok, encoded = cv2.imencode(path.suffix, pixels, params)
        if not ok:
            raise OSError(f"{path}: could not encode image")
        with open(tmp, "wb") as f:
            f.write(encoded.tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_overlays(
    out_dir: str | Path, path_label: str, image: np.ndarray, inspection: Inspection
) -> tuple[Path, Path]:
    """Write overlays/<label>.jpg (Inspection.overlay) and masks/<label>.png (0/255)."""
    out_dir = Path(out_dir)
    overlay_path = out_dir / OVERLAYS_DIR / overlay_relpath(path_label, OVERLAY_SUFFIX)
    mask_path = out_dir / MASKS_DIR / overlay_relpath(path_label, MASK_SUFFIX)
    _write_atomic_image(overlay_path, inspection.overlay(image), _OVERLAY_PARAMS)
    _write_atomic_image(mask_path, inspection.mask.astype(np.uint8) * 255, _MASK_PARAMS)
    return overlay_path, mask_path
