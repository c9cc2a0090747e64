"""One chunk of decoded images through the model into result rows, for every engine.

The local engine, the Ray actors and the dashboard call the model through
`batch_then_singly`, so one image the model cannot take costs one ERROR row, not its
whole batch; and both engines turn model outputs into rows with `chunk_records`, so
they write the same rows for the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import numpy as np

from anomaly.inspection.inspector import Inspection, Inspector
from anomaly.inspection.layout import Layout, call_groups, heatmap_and_score, per_image, stack
from anomaly.inspection.regions import mask_and_regions
from anomaly.scoring.inputs import Loaded, Prepared
from anomaly.scoring.overlay_files import OverlayMode, wants_overlay, write_overlays
from anomaly.scoring.schema import Record, result_row

Item = TypeVar("Item")
Result = TypeVar("Result")
# An image's model maps with its layout, or why the model could not score it.
ModelOutput = tuple[Sequence[np.ndarray], Layout] | str


def first_line(exc: BaseException, limit: int) -> str:
    """An exception in a few words for a row or a card: its first line, cut to `limit`."""
    text = str(exc)
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def batch_then_singly(
    items: Sequence[Item],
    batch_size: int,
    run: Callable[[list[Item]], list[Result]],
    failure: Callable[[Item, Exception], Result],
    progress: Callable[[int, int], None] | None = None,
) -> list[Result]:
    """`run` over `items` `batch_size` at a time; a batch that fails is run again one item
    at a time, so only the item that fails alone becomes `failure(item, exc)`.
    progress(done, total) is called after each batch."""
    out: list[Result] = []
    for start in range(0, len(items), batch_size):
        part = list(items[start : start + batch_size])
        try:
            out.extend(run(part))
        except Exception:  # find the culprit
            for one in part:
                try:
                    out.extend(run([one]))
                except Exception as exc:
                    out.append(failure(one, exc))
        if progress is not None:
            progress(min(len(items), start + batch_size), len(items))
    return out


def run_prepared(inspector: Inspector, prepared: Sequence[Prepared], batch_size: int) -> list[ModelOutput]:
    """The model's maps for images already prepared (views and layout), in order."""
    size = inspector.info.input_size

    def run(part: list[Prepared]) -> list[ModelOutput]:
        batch, layouts = stack(part, size)
        maps, _ = inspector.run(batch)
        return list(zip(per_image(cast(Sequence[np.ndarray], maps), layouts), layouts))

    def failure(_: Prepared, exc: Exception) -> ModelOutput:
        return f"inference failed ({first_line(exc, 200)})"

    # calls bounded in views too (layout.call_groups): tiled images are several views each
    out: list[ModelOutput] = []
    for group in call_groups([layout.views for _, layout in prepared], batch_size):
        out.extend(batch_then_singly([prepared[k] for k in group], len(group), run, failure))
    return out


def chunk_outputs(inspector: Inspector, chunk: Sequence[Loaded], batch_size: int) -> list[ModelOutput]:
    """The model outputs of a chunk's readable images (loaded with the model's grid)."""
    prepared = [x.prepared for x in chunk if x.prepared is not None]
    return run_prepared(inspector, prepared, batch_size) if prepared else []


def to_inspection(output: ModelOutput, image_threshold: float, pixel_threshold: float) -> Inspection | str:
    """A model output made an Inspection at the image's own resolution (as
    Inspector.inspect_batch does), or the error it already was."""
    if isinstance(output, str):
        return output
    heatmap, score = heatmap_and_score(*output)
    if not math.isfinite(score):
        return "model returned a non-finite score"
    mask, regions = mask_and_regions(heatmap, image_threshold, pixel_threshold)
    return Inspection(score, image_threshold, pixel_threshold, heatmap, mask, regions)


def chunk_records(
    chunk: Sequence[Loaded],
    outputs: Sequence[ModelOutput],
    thresholds: tuple[float, float],
    overlays_to: str | Path | None = None,
    mode: OverlayMode | None = "all",
    shown: Sequence[str] | None = None,
) -> list[Record]:
    """The result rows of a decoded chunk from the model outputs of its readable images
    (and their overlays written into `overlays_to`, when given). shown[i]: how chunk[i]'s
    file is named in error messages, when it was read under another path (the Ray
    actors read absolute paths; the rows name the path as the user gave it)."""
    it, pt = thresholds
    remaining = iter(outputs)
    records = []
    for k, x in enumerate(chunk):
        label, read_as = x.item.label, str(x.item.path)
        name = read_as if shown is None else shown[k]
        if x.prepared is None:  # unreadable: load_input's message, naming the file as shown
            msg = str(x.error).replace(read_as, name) if read_as != name else str(x.error)
            records.append(result_row(label, msg, image_threshold=it, pixel_threshold=pt))
            continue
        res = to_inspection(next(remaining), it, pt)
        if isinstance(res, str):
            layout = x.prepared[1]
            records.append(
                result_row(
                    label,
                    f"{name}: {res}",
                    layout.original_w,
                    layout.original_h,
                    image_threshold=it,
                    pixel_threshold=pt,
                )
            )
            continue
        res.name = label
        if overlays_to is not None and wants_overlay(mode, res):
            if x.image is None:
                raise ValueError(f"{name}: loaded without its picture, so no overlay can be drawn")
            write_overlays(overlays_to, label, x.image, res)
        records.append(result_row(label, res))
    return records


def score_loaded(
    inspector: Inspector,
    chunk: Sequence[Loaded],
    thresholds: tuple[float, float],
    batch_size: int,
    overlays_to: str | Path | None = None,
    mode: OverlayMode | None = "all",
    shown: Sequence[str] | None = None,
) -> list[Record]:
    """`chunk_records` of a chunk loaded with the model's grid, the model run here."""
    return chunk_records(chunk, chunk_outputs(inspector, chunk, batch_size), thresholds, overlays_to, mode, shown)
