"""Inspecting uploaded files in the dashboard (Inspect and Batch), kept free of Streamlit so it can be tested.

Uploaded files arrive as (name, bytes) pairs and leave as `Item`s: an error naming the
file, or its inspection with a display-size picture. The model is run once per image at
its calibrated thresholds; a different threshold re-decides the verdict and the defect
regions from the stored heatmap (`Inspection.with_thresholds`) without running the model
again. Uses only the torch-free runtime. Tables and exports of the results are in
tables.py; de-duplication and checks of the uploads in uploads.py.

Memory: a session keeps no full-resolution copy of a large upload. The picture is kept
at display size and the heatmap at no more than ANALYSIS_MAX_SIDE; regions found on
that heatmap are scaled back to the original's pixels. The score, and so the verdict,
comes from the model's run on the full image and does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from anomaly.inspection.imageio import ImageReadError, decode_image, to_uint8
from anomaly.inspection.inspector import Inspection, Inspector
from anomaly.inspection.regions import Region
from anomaly.scoring.inference import batch_then_singly, first_line
from anomaly.ui.uploads import has_alpha, read_problem, unique_uploads
from anomaly.ui.views import DISPLAY_MAX_SIDE, compose, downscale

ANALYSIS_MAX_SIDE = 2048  # pixels; heatmaps kept for re-deciding at most this size


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
