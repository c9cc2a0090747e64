"""Thresholds from held-out good images (and, when there are any, labelled defects).

Scores here are raw (uncalibrated) heatmap values. Calibration turns them into the
model's fixed scale: 0 is a typical normal pixel, 1.0 the image threshold. The image
threshold is set for a target false-reject rate; with only tens of held-out parts an
empirical quantile is too coarse, so we fit a log-normal to the good image scores
(they are positive and right-skewed) and take the larger of its upper prediction bound
and the empirical quantile. The bound allows for the mean and spread being estimated
from those few parts (Student's t with n - 1 degrees of freedom, widened by
sqrt(1 + 1/n)): with few held-out images a plain quantile of the fitted log-normal
rejects far more good parts than the target (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

# The most good parts a shipped threshold may reject on average: the lower end of the
# range in which painted defects may move it below the good-only bound.
MAX_FALSE_REJECT = 0.03


@dataclass
class Calibration:
    map_center: float
    map_scale: float
    pixel_threshold: float  # on the calibrated scale, <= 1.0
    image_threshold: float = 1.0
    target_false_reject: float = 0.01
    pixel_false_positive: float = 0.005
    holdout_count: int = 0
    image_threshold_f1: float | None = None
    pixel_threshold_f1: float | None = None
    f1_source: str | None = None  # "synthetic" (painted defects) or "labelled" (--defects)
    synthetic_defects: dict | None = None  # generator settings, when f1_source is synthetic
    good_count: int = 0  # good scores the image threshold was set on (held-out + out-of-fold)
    threshold_from: str | None = None  # which bound set the shipped image threshold (decision_threshold)
    threshold_levels: dict | None = None  # the levels it was chosen from, on the calibrated scale
    # how far that rule moved the threshold from the held-out good-only bound (x map_scale)
    threshold_factor: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def upper_threshold(good_scores: np.ndarray, false_reject: float) -> float:
    """Score above which only `false_reject` of good parts should fall."""
    s = np.asarray(good_scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no held-out good images to calibrate on")
    q = 1.0 - false_reject
    empirical = float(np.quantile(s, q))
    if s.size < 3 or np.any(s <= 0):
        return empirical
    logs = np.log(s)
    n = logs.size
    t = float(student_t.ppf(q, df=n - 1))
    fitted = float(np.exp(logs.mean() + t * logs.std(ddof=1) * np.sqrt(1.0 + 1.0 / n)))
    return max(fitted, empirical)


def decision_threshold(
    good_scores: np.ndarray, painted_scores: np.ndarray, false_reject: float, max_false_reject: float = MAX_FALSE_REJECT
) -> tuple[float, str, dict[str, float]]:
    """The image threshold to ship, on the scale of the scores, which bound set it, and
    the levels it was chosen from (for the model file: a threshold should be explainable).

    The good-only bound (`upper_threshold` at `false_reject`) is safe for good parts but,
    from few good scores, it can sit far above them, where real defects that rank
    perfectly still pass. Obvious defects painted on held-out good parts cap it: the
    threshold is never above the median painted score (the level at which half of them
    are caught; the median, because some paintings barely change a part and score like
    it). The cap never pushes it below the good-only bound at `max_false_reject`, so on
    average no more good parts than that are rejected."""
    good = np.asarray(good_scores, dtype=np.float64)
    painted = np.asarray(painted_scores, dtype=np.float64)
    high = upper_threshold(good, false_reject)
    levels = {"largest_good": float(good.max()), "good_bound": high}
    if painted.size == 0:
        return high, "good scores", levels
    cap = levels["painted_median"] = float(np.median(painted))
    low = levels["good_bound_at_max_false_reject"] = min(upper_threshold(good, max_false_reject), high)
    if cap >= high:
        return high, "good scores", levels
    if cap <= low:
        return low, f"good scores at {max_false_reject:.0%} false rejects", levels
    return cap, "painted defects", levels


def calibrate(
    good_image_scores: np.ndarray,
    good_pixels: np.ndarray,
    false_reject: float = 0.01,
    pixel_false_positive: float = 0.005,
) -> Calibration:
    """Per-model normalisation: centre on the median good pixel, scale so the image
    threshold lands on 1.0; the pixel threshold is the good-pixel quantile for the
    target pixel false-positive rate, on that scale (never above the image threshold)."""
    threshold = upper_threshold(good_image_scores, false_reject)
    center = float(np.median(good_pixels))
    scale = max(threshold - center, 1e-12)
    pixel_raw = float(np.quantile(good_pixels, 1.0 - pixel_false_positive))
    pixel = float(np.clip((pixel_raw - center) / scale, 0.05, 1.0))
    return Calibration(center, scale, pixel, 1.0, false_reject, pixel_false_positive, int(np.size(good_image_scores)))


EDGE_TAIL = 0.99  # the good-pixel quantile whose height each ring is matched on


def edge_profile(maps: np.ndarray, valid: np.ndarray, rings: np.ndarray, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-ring (centre, scale) that bring each ring d < band of the frame to the level
    of the annulus just inside it (rings band .. 2 band) on held-out good raw maps:
    (raw - centre[d]) / scale[d] has the annulus's median and its EDGE_TAIL quantile
    above it. maps (N, S, S); valid (N, S, S) marks image pixels (not letterbox
    padding); rings (S, S) from model.edge_rings.

    Edges are only ever damped: a ring's scale is >= 1 and its median is only lowered,
    so no ring becomes more sensitive than the part inside it. The reference is the
    neighbouring annulus, not the whole interior, so a part whose centre simply looks
    calmer than its outskirts is not flattened. Neighbouring rings are averaged (5 rings)
    and the damping never grows inwards, so a few held-out images give a smooth profile.
    Rings with too few pixels, and all rings >= band, stay as they are (centre 0, scale 1)."""
    half = rings.max() + 1
    centre, scale = np.zeros(half), np.ones(half)
    reference = maps[valid & ((rings >= band) & (rings < 2 * band))[None]]
    if reference.size < 100:
        return centre.astype(np.float32), scale.astype(np.float32)
    c_ref = float(np.median(reference))
    s_ref = max(float(np.quantile(reference, EDGE_TAIL)) - c_ref, 1e-12)
    med, ratio = np.full(band, c_ref), np.ones(band)
    for d in range(band):
        ring = maps[valid & (rings == d)[None]]
        if ring.size >= 100:
            med[d] = max(float(np.median(ring)), c_ref)
            ratio[d] = max((float(np.quantile(ring, EDGE_TAIL)) - med[d]) / s_ref, 1.0)
    kernel = np.ones(5) / 5
    med = np.convolve(np.pad(med, 2, mode="edge"), kernel, mode="valid")
    ratio = np.maximum.accumulate(np.convolve(np.pad(ratio, 2, mode="edge"), kernel, mode="valid")[::-1])[::-1]
    # (raw - med) / ratio + c_ref  ==  (raw - centre) / scale
    centre[:band] = med - c_ref * ratio
    scale[:band] = ratio
    return centre.astype(np.float32), scale.astype(np.float32)
