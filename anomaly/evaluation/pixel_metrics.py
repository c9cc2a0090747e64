"""Pixel-level metrics for judging an anomaly detector's maps: pixel AUROC, AUPRO and the best
pixel-F1 threshold. Image-level metrics (ROC, F1, confusion) are in metrics.py.

Pixel metrics pool the pixels of all images, and are exact in the same way as the
image-level ones (every distinct score is a threshold step; see metrics.py). numpy and
scikit-image only. A test set is easily tens of millions of pixels, so these functions
never build an index array over all pixels: they copy the normal pixels' scores into one
array of the maps' dtype (float32 for float32 maps) and sort it in place, and only the
defect pixels, usually a small share, are sorted with an index. Memory is then about
4 bytes per pixel for float32 maps, plus the defect pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from skimage.measure import label as _label_regions

from anomaly.evaluation.metrics import SEARCH_CHUNK, best_f1_threshold, rank_auc

__all__ = ["aupro", "pixel_auroc", "pixel_f1_threshold"]


# --------------------------------------------------------------------------- checks


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


# --------------------------------------------------------------------- pixel AUROC


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
    return rank_auc(pos, neg)


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
    for a in range(lo, n_neg, SEARCH_CHUNK):
        b = min(a + SEARCH_CHUNK, n_neg)
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


# ------------------------------------------------------------------------ pixel F1


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
