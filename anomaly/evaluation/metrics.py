"""Metrics for judging an anomaly detector: image-level ROC/F1, pixel AUROC and AUPRO.

Why this module looks the way it does:

* numpy and scikit-image only. Evaluation has to run wherever inference runs (the
  slim install has no torch and no scikit-learn); scikit-learn is used only by the
  tests, to check that these numbers are the ones everybody else reports.
* Exact, not approximate. Every curve is built from the sorted scores with
  cumulative sums, and equal scores are one threshold step (a threshold takes
  all samples that share a score or none of them), exactly as scikit-learn and
  the MVTec AD evaluation code do. A threshold grid would make the numbers
  depend on the grid, so results could not be compared with published ones.
* Pixel metrics pool the pixels of all images. A test set is easily tens of
  millions of pixels, so the pixel functions never build an index array over all
  pixels: they copy the normal pixels' scores into one array of the maps' dtype
  (float32 for float32 maps) and sort it in place, and only the defect pixels,
  usually a small share, are sorted with an index. Memory is then about
  4 bytes per pixel for float32 maps, plus the defect pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from skimage.measure import label as _label_regions

__all__ = [
    "aupro",
    "best_f1_threshold",
    "confusion",
    "f1_score",
    "pixel_auroc",
    "pixel_f1_threshold",
    "roc_auc",
    "roc_curve",
]

# Queries per np.searchsorted call, so its int64 output stays ~8 MB however many
# defect pixels there are.
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- checks


def _binary(values: ArrayLike, name: str) -> np.ndarray:
    """Return a 1-D bool array; refuse anything that is not bool or 0/1.

    Labels such as {-1, 1} or {0, 255} are refused rather than guessed at: a
    silently wrong positive class turns an AUROC of 0.9 into 0.1.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)) or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be bool or 0/1, got values like {np.unique(arr)[:5]!r}")
    return arr.astype(bool)


def _finite_scores(scores: ArrayLike, n: int, name: str = "scores") -> np.ndarray:
    """Return scores as a 1-D float64 array of length n, all finite."""
    arr = np.asarray(scores)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries (one per label), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinity")
    return arr


def _labels_and_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = _binary(labels, "labels")
    return y, _finite_scores(scores, y.shape[0])


def _require_both_classes(y: np.ndarray, what: str) -> tuple[int, int]:
    """Return (n_positive, n_negative); a ROC needs both, so one class is an error."""
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        present = "positive (1)" if n_pos else "negative (0)"
        raise ValueError(
            f"{what} is undefined when only one class is present: all {y.size} labels are {present}; "
            "evaluate on a set that has both good and defective samples"
        )
    return n_pos, n_neg


def _prepare_maps(
    masks: Sequence[ArrayLike], maps: Sequence[ArrayLike]
) -> tuple[list[np.ndarray], list[np.ndarray], np.dtype]:
    """Validate pairs of (mask, map); return bool masks, maps and the pooled score dtype.

    Masks may be bool or any numeric type (nonzero = defect, so 0/255 PNG masks
    work). The pooled dtype keeps the maps' precision (float32 stays float32, so
    memory stays low; float64 stays float64, so results match a float64
    reference exactly); integer maps are pooled as float64.
    """
    if len(masks) != len(maps):
        raise ValueError(f"got {len(masks)} masks but {len(maps)} maps; need one mask per map")
    if len(masks) == 0:
        raise ValueError("need at least one (mask, map) pair")
    out_masks, out_maps = [], []
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        mask = np.asarray(mask)
        amap = np.asarray(amap)
        if mask.ndim != 2 or mask.shape != amap.shape:
            raise ValueError(f"image {i}: mask {mask.shape} and map {amap.shape} must be the same 2-D shape")
        if not np.issubdtype(amap.dtype, np.number):
            raise ValueError(f"image {i}: map must be numeric, got dtype {amap.dtype}")
        if not np.isfinite(amap).all():
            raise ValueError(f"image {i}: map contains NaN or infinity")
        out_masks.append(mask if mask.dtype == bool else mask != 0)
        out_maps.append(amap)
    dtype = np.result_type(*[m.dtype for m in out_maps])
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    elif dtype.itemsize < 4:
        dtype = np.dtype(np.float32)
    return out_masks, out_maps, dtype


def _pool(masks: list[np.ndarray], maps: list[np.ndarray], dtype: np.dtype, defect: bool) -> np.ndarray:
    """Scores of all defect (or all normal) pixels of all images, in one preallocated array."""
    count = sum(int(np.count_nonzero(m)) for m in masks)
    if not defect:
        count = sum(m.size for m in masks) - count
    out = np.empty(count, dtype=dtype)
    pos = 0
    for mask, amap in zip(masks, maps):
        sel = amap[mask] if defect else amap[~mask]
        out[pos : pos + sel.size] = sel
        pos += sel.size
    return out


# ------------------------------------------------------------------------ ROC / AUC


def _rank_auc(pos: np.ndarray, neg_sorted: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic: P(pos > neg) + 0.5 * P(pos == neg).

    This is the area under the ROC curve with ties drawn as diagonal segments,
    which is what scikit-learn's trapezoidal roc_auc_score computes, but here it
    is exact integer arithmetic and needs no index array over all samples.
    `neg_sorted` must be sorted ascending.
    """
    twice_u = 0
    for start in range(0, pos.size, _CHUNK):
        chunk = pos[start : start + _CHUNK]
        below = np.searchsorted(neg_sorted, chunk, side="left")  # negatives < score
        not_above = np.searchsorted(neg_sorted, chunk, side="right")  # negatives <= score
        twice_u += int(below.sum(dtype=np.int64)) + int(not_above.sum(dtype=np.int64))
    return twice_u / (2 * pos.size * neg_sorted.size)


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score: (fpr, tpr, thresholds).

    Same convention as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``
    so plots and numbers line up with other tools: a sample is predicted
    defective when ``score >= threshold``; thresholds are the distinct scores in
    decreasing order, preceded by ``inf`` (nothing predicted, the point (0, 0));
    equal scores form one step, so ties become diagonal segments.

    Raises ValueError if only one class is present (one of the rates would be 0/0).
    """
    y, s = _labels_and_scores(labels, scores)
    _require_both_classes(y, "a ROC curve")
    order = np.argsort(s, kind="stable")[::-1]
    s_desc = s[order]
    # last index of each run of equal scores: each run is one threshold
    last = np.r_[np.flatnonzero(np.diff(s_desc)), s_desc.size - 1]
    tps = np.cumsum(y[order], dtype=np.int64)[last]
    fps = last + 1 - tps
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    thresholds = np.r_[np.inf, s_desc[last]]
    return fpr, tpr, thresholds


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score``.

    Ties between a positive and a negative count one half (the trapezoid rule on
    the tied ROC segment). Computed as the exact rank statistic, so it does not
    accumulate floating-point error over many thresholds.

    Raises ValueError if only one class is present.
    """
    y, s = _labels_and_scores(labels, scores)
    _require_both_classes(y, "ROC AUC")
    neg = s[~y]
    neg.sort()
    return _rank_auc(s[y], neg)


def pixel_auroc(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike]) -> float:
    """Pixel-level AUROC over all pixels of all images pooled.

    Equals ``roc_auc_score(concat(masks).ravel(), concat(maps).ravel())`` but
    stays fast and lean on large test sets (20M pixels take a few seconds): it
    sorts the normal pixels' scores in place, in the maps' own dtype, and ranks
    the defect pixels against them with binary search.

    masks: one HxW array per image, True (nonzero) = defect pixel.
    maps: one HxW anomaly map per image, higher = more anomalous.
    Raises ValueError if there are no defect pixels or no normal pixels.
    """
    masks_b, maps_a, dtype = _prepare_maps(masks, maps)
    n_pos = sum(int(np.count_nonzero(m)) for m in masks_b)
    n_all = sum(m.size for m in masks_b)
    if n_pos == 0 or n_pos == n_all:
        kind = "defect" if n_pos == 0 else "normal"
        raise ValueError(f"pixel AUROC is undefined: there are no {kind} pixels in the {len(masks_b)} masks")
    neg = _pool(masks_b, maps_a, dtype, defect=False)
    neg.sort()
    pos = _pool(masks_b, maps_a, dtype, defect=True)
    pos.sort()  # sorted queries keep binary search cache friendly
    return _rank_auc(pos, neg)


# --------------------------------------------------------------------------- AUPRO


def aupro(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike], fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD, Bergmann et al.).

    Why PRO: pixel AUROC is dominated by large defects; PRO weighs every
    connected defect region equally, so missing a small scratch costs as much as
    missing a large stain.

    Definition, for a threshold t (pixel flagged when ``score >= t``):
      * PRO(t) = mean, over all connected ground-truth regions (8-connectivity,
        regions of all images pooled), of the fraction of the region's pixels
        flagged;
      * FPR(t) = fraction of all normal pixels (of all images, including
        defect-free ones) flagged.
    PRO is integrated over FPR from 0 to ``fpr_limit`` with the trapezoid rule,
    the curve being interpolated linearly at ``fpr_limit``, and divided by
    ``fpr_limit`` so a perfect map scores 1.0 and uniform random scores ~ fpr_limit/2.

    The curve is exact: its vertices are all distinct scores (equal scores form
    one step). Between two consecutive distinct scores of normal pixels, the FPR
    moves over one "run" of equal normal scores while PRO goes from its value
    just above that score to its value at it; thresholds taken by defect pixels
    alone move PRO at constant FPR and add no area. So the area is a sum over
    runs of normal scores, each term read from cumulative sums over the sorted
    defect pixels. Only the runs with FPR below ``fpr_limit`` are visited.

    Raises ValueError if there are no defect regions or no normal pixels, or if
    fpr_limit is not in (0, 1].
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks_b, maps_a, dtype = _prepare_maps(masks, maps)

    # Each defect pixel carries weight 1/|its region|; PRO(t) = (sum of weights of
    # flagged defect pixels) / (number of regions).
    def_scores, def_weights = [], []
    n_regions = 0
    for mask, amap in zip(masks_b, maps_a):
        if not mask.any():
            continue
        regions, n = _label_regions(mask, connectivity=2, return_num=True)
        sizes = np.bincount(regions.ravel(), minlength=n + 1)
        def_scores.append(amap[mask].astype(dtype, copy=False))
        def_weights.append(1.0 / sizes[regions[mask]])
        n_regions += n
    if n_regions == 0:
        raise ValueError(f"AUPRO is undefined: the {len(masks_b)} masks contain no defect regions")
    neg = _pool(masks_b, maps_a, dtype, defect=False)
    n_neg = neg.size
    if n_neg == 0:
        raise ValueError("AUPRO is undefined: every pixel is a defect pixel, so the FPR has no denominator")
    neg.sort()

    d = np.concatenate(def_scores)
    w = np.concatenate(def_weights)
    order = np.argsort(d, kind="stable")
    d, w = d[order], w[order]
    # weight_ge[i] = total weight of defect pixels d[i:], i.e. of those with score >= d[i]
    weight_ge = np.zeros(d.size + 1)
    weight_ge[:-1] = np.cumsum(w[::-1])[::-1]
    # weight_ge[0] is n_regions up to rounding; dividing by it makes PRO end exactly at 1.
    total = weight_ge[0]

    # Runs of equal normal scores whose FPR interval may start below fpr_limit:
    # a run [start, end) of the ascending array spans FPR ((n-end)/n, (n-start)/n].
    # Start the search a little early (k), at the beginning of k's run (lo), and
    # walk the rest in blocks so temporaries stay small however many pixels there are.
    k = max(0, int(np.floor(n_neg * (1.0 - fpr_limit))) - 1)
    lo = int(np.searchsorted(neg, neg[k], side="left"))
    area = 0.0
    for a in range(lo, n_neg, _CHUNK):
        b = min(a + _CHUNK, n_neg)
        block = neg[a:b]
        is_start = np.empty(block.size, dtype=bool)
        is_start[0] = a == lo or neg[a] != neg[a - 1]
        np.not_equal(block[1:], block[:-1], out=is_start[1:])
        starts = np.flatnonzero(is_start) + a
        if starts.size == 0:
            continue
        values = neg[starts]
        ends = np.searchsorted(neg, values, side="right")  # a run may end in a later block
        x0 = (n_neg - ends) / n_neg  # FPR just above the run's score
        x1 = (n_neg - starts) / n_neg  # FPR at the run's score
        y0 = weight_ge[np.searchsorted(d, values, side="right")] / total  # PRO just above
        y1 = weight_ge[np.searchsorted(d, values, side="left")] / total  # PRO at the score
        x_end = np.minimum(x1, fpr_limit)
        keep = x_end > x0  # runs entirely beyond fpr_limit add nothing
        x0, x1, y0, y1, x_end = x0[keep], x1[keep], y0[keep], y1[keep], x_end[keep]
        y_end = y0 + (y1 - y0) * (x_end - x0) / (x1 - x0)  # linear interpolation at fpr_limit
        area += float(np.sum((x_end - x0) * (y0 + y_end))) / 2.0
    return area / fpr_limit


# ------------------------------------------------------------------------------ F1


def confusion(labels: ArrayLike, predicted: ArrayLike) -> dict[str, int]:
    """Counts of true/false positives/negatives, with 1/True = defect.

    Returned as plain ints (keys tp, fp, tn, fn) so they serialise to JSON reports.
    """
    y = _binary(labels, "labels")
    p = _binary(predicted, "predicted")
    if p.shape != y.shape:
        raise ValueError(f"labels has {y.size} entries but predicted has {p.size}")
    tp = int(np.count_nonzero(y & p))
    fp = int(np.count_nonzero(~y & p))
    fn = int(np.count_nonzero(y & ~p))
    tn = int(y.size - tp - fp - fn)
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def f1_score(labels: ArrayLike, predicted: ArrayLike) -> float:
    """F1 = 2 tp / (2 tp + fp + fn) of the defect class.

    When there are no defects and none are predicted F1 is 0/0; like
    scikit-learn's default we return 0.0 rather than raise, so a report over
    several subsets does not stop on one empty subset.
    """
    c = confusion(labels, predicted)
    denom = 2 * c["tp"] + c["fp"] + c["fn"]
    return 2 * c["tp"] / denom if denom else 0.0


def f1_operating_threshold(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """best_f1_threshold moved to the middle of the empty score interval just below it:
    (threshold, f1), the same predictions and F1 on these samples.

    Why: best_f1_threshold sits exactly on the weakest defect it catches, so with a
    handful of labelled defects the next, slightly weaker one is missed. Halfway to the
    highest score below it leaves the same margin on both sides (as a max-margin
    classifier would), which is what an operating threshold for unseen parts needs.
    """
    threshold, f1 = best_f1_threshold(labels, scores)
    s = np.asarray(scores, dtype=np.float64).ravel()
    below = s[s < threshold]
    return (0.5 * (threshold + float(below.max())) if below.size else threshold), f1


def best_f1_threshold(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Threshold maximising F1 when predicting ``scores >= threshold``: (threshold, f1).

    Why: the deployed tool needs one operating point, and F1 balances missed
    defects against false alarms without needing a cost model.

    Every distinct score is a candidate (no other threshold gives a different
    prediction), evaluated in one vectorised pass; samples with equal scores are
    always predicted together. The threshold returned is a score value itself,
    so ``scores >= threshold`` reproduces the F1 exactly. Among thresholds with
    the same best F1 the highest one is returned (fewest alarms).

    Raises ValueError if there are no positive labels (F1 would be 0 everywhere).
    """
    y, s = _labels_and_scores(labels, scores)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        raise ValueError(f"best F1 threshold is undefined: none of the {y.size} labels is positive")
    order = np.argsort(s, kind="stable")[::-1]
    s_desc = s[order]
    last = np.r_[np.flatnonzero(np.diff(s_desc)), s_desc.size - 1]
    tp = np.cumsum(y[order], dtype=np.int64)[last]
    n_predicted = last + 1
    # 2tp / (2tp + fp + fn) with fp = predicted - tp, fn = n_pos - tp. Equal F1
    # values are equal fractions and divide to the same double, so argmax picks
    # the first (highest) threshold among exact ties.
    f1 = 2 * tp / (n_predicted + n_pos)
    best = int(np.argmax(f1))
    return float(s_desc[last[best]]), float(f1[best])


def pixel_f1_threshold(
    masks: Sequence[ArrayLike],
    maps: Sequence[ArrayLike],
    max_pixels: int = 5_000_000,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Best pixel-level F1 threshold over all pixels of all images: (threshold, f1).

    Used to pick the threshold that turns anomaly maps into defect masks. A
    threshold does not need every pixel to be estimated well, so when there are
    more than ``max_pixels`` pixels a uniform random subset of exactly
    ``max_pixels`` pixels (without replacement, across all images) is used,
    bounding time and memory; the F1 returned is then the F1 on that subset.
    ``seed`` makes the subset reproducible.

    Raises ValueError if the (sampled) pixels contain no defect pixel.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    masks_b, maps_a, dtype = _prepare_maps(masks, maps)
    sizes = np.array([m.size for m in masks_b], dtype=np.int64)
    rng = np.random.default_rng(seed)
    if sizes.sum() > max_pixels:
        # how many pixels to take from each image so the union is a uniform sample
        take = rng.multivariate_hypergeometric(sizes, max_pixels, method="marginals")
    else:
        take = sizes
    labels = np.empty(int(take.sum()), dtype=bool)
    scores = np.empty(int(take.sum()), dtype=dtype)
    pos = 0
    for mask, amap, size, k in zip(masks_b, maps_a, sizes, take):
        if k == size:
            labels[pos : pos + k] = mask.ravel()
            scores[pos : pos + k] = amap.ravel()
        elif k > 0:
            idx = rng.choice(int(size), size=int(k), replace=False)
            labels[pos : pos + k] = mask.ravel()[idx]
            scores[pos : pos + k] = amap.ravel()[idx]
        pos += int(k)
    return best_f1_threshold(labels, scores)
