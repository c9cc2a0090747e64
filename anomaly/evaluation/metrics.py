"""Image-level metrics for judging an anomaly detector: ROC curve and AUROC, confusion counts, F1 and
the best-F1 operating threshold. Pixel-level metrics (pixel AUROC, AUPRO, pixel F1) are in pixel_metrics.py.

Why this module looks the way it does:

* numpy only. Evaluation has to run wherever inference runs (the slim install has no
  torch and no scikit-learn); scikit-learn is used only by the tests, to check that
  these numbers are the ones everybody else reports.
* Exact, not approximate. Every curve is built from the sorted scores with
  cumulative sums, and equal scores are one threshold step (a threshold takes
  all samples that share a score or none of them), exactly as scikit-learn and
  the MVTec AD evaluation code do. A threshold grid would make the numbers
  depend on the grid, so results could not be compared with published ones.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "best_f1_threshold",
    "confusion",
    "f1_operating_threshold",
    "f1_score",
    "rank_auc",
    "roc_auc",
    "roc_curve",
]

# Queries per np.searchsorted call, so its int64 output stays ~8 MB however many
# defect pixels there are.
SEARCH_CHUNK = 1 << 20


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


# ------------------------------------------------------------------------ ROC / AUC


def rank_auc(pos: np.ndarray, neg_sorted: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic: P(pos > neg) + 0.5 * P(pos == neg).

    This is the area under the ROC curve with ties drawn as diagonal segments,
    which is what scikit-learn's trapezoidal roc_auc_score computes, but here it
    is exact integer arithmetic and needs no index array over all samples.
    `neg_sorted` must be sorted ascending.
    """
    twice_u = 0
    for start in range(0, pos.size, SEARCH_CHUNK):
        chunk = pos[start : start + SEARCH_CHUNK]
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
    return rank_auc(s[y], neg)


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
