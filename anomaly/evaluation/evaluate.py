"""`anomaly evaluate`: metrics on a labelled MVTec-style test split, and a visual report.

Works with any scorer that has `score(images) -> (heatmaps, scores)` and
`image_threshold` / `pixel_threshold`: the trained model folder (torch) or the exported
ONNX file (runtime, no torch), so both can be checked against each other.

Pixel metrics are computed on the grid the model works on (as anomalib does): the image
with its longest side at the working size, or for a tiled model the tiled frame (a
long strip keeps its detail). `eval_size` instead puts the longest side at that many
pixels. Heatmaps are area-averaged onto the grid and ground-truth masks resampled (a
pixel is defect if at least half of it was). A defect image without a mask counts for
the image metrics only: taking its pixels as all good would punish the heatmap for
finding the defect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm.auto import tqdm

from anomaly.evaluation import metrics, pixel_metrics
from anomaly.evaluation.datasets import TestSample, find_test_set, load_mask
from anomaly.inspection.imageio import ImageReadError, read_image, save_image
from anomaly.inspection.layout import working_shape
from anomaly.inspection.overlays import colorize, overlay, panel_row
from anomaly.inspection.regions import defect_mask

log = logging.getLogger(__name__)


class Scorer(Protocol):
    image_threshold: float
    pixel_threshold: float

    def score(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]: ...


DEFAULT_EVAL_SIZE = 256  # for a scorer that does not say how it sees images


def model_grid(scorer: object) -> tuple[int, str, int] | None:
    """(working size, fit mode, tiles) of an ONNX Inspector (`info`) or a Detector
    (`model_config`); None for another scorer."""
    for holder in (getattr(scorer, "info", None), getattr(scorer, "model_config", None)):
        grid = getattr(holder, "grid", None)
        if grid is not None:
            return grid
    return None


def _eval_shape(h: int, w: int, eval_size: int | None, grid: tuple[int, str, int] | None = None) -> tuple[int, int]:
    if eval_size is None:
        size, mode, tiles = grid or (DEFAULT_EVAL_SIZE, "letterbox", 1)
        return working_shape(h, w, size, mode, tiles)
    return working_shape(h, w, eval_size)


def _downsample(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(a.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def _metrics_for(
    labels: np.ndarray, scores: np.ndarray, masks: list[np.ndarray | None], maps: list[np.ndarray], threshold: float
) -> dict[str, Any]:
    pred = scores >= threshold
    out: dict[str, Any] = {
        "count": int(labels.size),
        "defective": int(labels.sum()),
        "image_auroc": metrics.roc_auc(labels, scores) if 0 < labels.sum() < labels.size else None,
        "image_f1": metrics.f1_score(labels, pred),
        "confusion": metrics.confusion(labels, pred),
    }
    known = [(m, mp) for m, mp in zip(masks, maps) if m is not None]
    known_masks, known_maps = [m for m, _ in known], [mp for _, mp in known]
    has_defect_pixels = any(m.any() for m in known_masks)
    out["pixel_auroc"] = pixel_metrics.pixel_auroc(known_masks, known_maps) if has_defect_pixels else None
    out["pixel_aupro"] = pixel_metrics.aupro(known_masks, known_maps, fpr_limit=0.3) if has_defect_pixels else None
    return out


def verdict_summary(confusion: dict[str, int], f1: float, best_f1: float | None) -> dict[str, Any]:
    """What an inspector sees at the shipped threshold: defects caught and good parts
    rejected (n of N), the F1 of those verdicts, and beside it the best F1 any threshold
    reaches on this test set (an oracle: how much the threshold, not the ranking, costs)."""
    c = confusion
    defects, good = c["tp"] + c["fn"], c["fp"] + c["tn"]
    return {
        "defects_caught": c["tp"],
        "defects": defects,
        "good_rejected": c["fp"],
        "good": good,
        "good_rejected_rate": c["fp"] / good if good else None,
        "f1": f1,
        "best_f1": best_f1,
    }


def evaluate(
    scorer: Scorer,
    data: str | Path,
    eval_size: int | None = None,
    report_dir: str | Path | None = None,
    report_count: int = 2,
    progress: bool = True,
    reconstruct=None,
) -> dict[str, Any]:
    """Score every test image and compute metrics overall and per defect type."""
    samples = find_test_set(data)
    grid = model_grid(scorer)
    kept: list[TestSample] = []
    scores: list[float] = []
    maps: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    errors: list[str] = []
    for s in tqdm(samples, desc="evaluating", unit="img", disable=not progress):
        try:
            img = read_image(s.path)
        except ImageReadError as exc:
            errors.append(str(exc))
            log.warning("skipped %s", exc)
            continue
        (hm,), (sc,) = scorer.score([img])
        shape = _eval_shape(img.shape[0], img.shape[1], eval_size, grid)
        maps.append(_downsample(hm, shape))
        masks.append(
            None if s.mask_unknown else _downsample(load_mask(s, img.shape[:2]).astype(np.float32), shape) >= 0.5
        )
        scores.append(float(sc))
        kept.append(s)
    without_mask = [str(s.path) for s in kept if s.mask_unknown]
    if without_mask:
        log.warning(
            "%d defect image(s) have no ground-truth mask (e.g. %s); they count for the image metrics only",
            len(without_mask),
            without_mask[0],
        )
    labels = np.array([s.is_defective for s in kept])
    score_arr = np.array(scores)
    thr = float(scorer.image_threshold)
    result: dict[str, Any] = {
        "data": str(Path(data).resolve()),
        "image_threshold": thr,
        "pixel_threshold": float(scorer.pixel_threshold),
        "eval_grid": f"longest side {eval_size}"
        if eval_size
        else ("model working grid" if grid else f"longest side {DEFAULT_EVAL_SIZE}"),
        "skipped": errors,
        "without_mask": without_mask,
    }
    result.update(_metrics_for(labels, score_arr, masks, maps, thr))
    best_thr, best_f1 = metrics.best_f1_threshold(labels, score_arr) if 0 < labels.sum() < labels.size else (None, None)
    result["best_image_f1"] = {"threshold": best_thr, "f1": best_f1, "note": "oracle: chosen on this test set"}
    result["verdicts"] = verdict_summary(result["confusion"], result["image_f1"], best_f1)
    per_defect: dict[str, Any] = {}
    good = [i for i, s in enumerate(kept) if not s.is_defective]
    for defect in sorted({s.defect for s in kept if s.is_defective}):
        idx = good + [i for i, s in enumerate(kept) if s.defect == defect]
        per_defect[defect] = _metrics_for(
            labels[idx], score_arr[idx], [masks[i] for i in idx], [maps[i] for i in idx], thr
        )
    result["per_defect"] = per_defect
    result["scores"] = [{"path": str(s.path), "defect": s.defect, "score": round(sc, 6)} for s, sc in zip(kept, scores)]
    if report_dir is not None:
        write_report(Path(report_dir), scorer, kept, labels, score_arr, report_count, reconstruct)
    return result


def write_report(
    out: Path,
    scorer: Scorer,
    samples: list[TestSample],
    labels: np.ndarray,
    scores: np.ndarray,
    per_type: int,
    reconstruct=None,
) -> None:
    """PNG panels (input | reconstruction | heatmap overlay | ground truth) for a few
    images of each type, and the image-level ROC curve."""
    out.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[TestSample]] = {}
    for s in samples:
        by_type.setdefault(s.defect, []).append(s)
    for defect, group in sorted(by_type.items()):
        for s in group[:per_type]:
            img = read_image(s.path)
            (hm,), (sc,) = scorer.score([img])
            mask = defect_mask(hm, scorer.image_threshold, scorer.pixel_threshold)
            verdict = "FAIL" if sc >= scorer.image_threshold else "PASS"
            panels = [("input", img)]
            if reconstruct is not None:
                panels.append(("reconstruction", reconstruct(img)))
            else:  # feature models reconstruct features, not pixels: show the raw heatmap
                panels.append(("heatmap (0 .. 1.5)", colorize(hm)))
            panels.append((f"score {sc:.2f} {verdict}", overlay(img, hm, mask, scorer.pixel_threshold)))
            gt = load_mask(s, img.shape[:2]).astype(np.uint8) * 255
            panels.append(("ground truth", gt))
            save_image(out / f"{defect}_{s.path.stem}.png", panel_row(panels))
    if 0 < labels.sum() < labels.size:
        plot_roc(out / "roc.png", labels, scores)


def plot_roc(path: Path, labels: np.ndarray, scores: np.ndarray) -> None:
    try:
        import matplotlib
    except ImportError:
        log.warning("%s not written (matplotlib is not installed; pip install 'anomaly[eval]')", path)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {metrics.roc_auc(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate (good parts rejected)",
        ylabel="true positive rate (defects found)",
        title="Image-level ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
