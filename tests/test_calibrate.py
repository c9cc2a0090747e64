"""Calibration puts the image threshold at 1.0 and sets thresholds for target rates."""

import numpy as np
import pytest

from anomaly.training.calibrate import EDGE_TAIL, calibrate, edge_profile, upper_threshold
from anomaly.training.model import edge_rings

EDGE_SIZE, EDGE_BAND = 128, 16
RINGS = edge_rings(EDGE_SIZE)


def test_threshold_rejects_about_the_target_share_of_good_parts():
    rng = np.random.default_rng(0)
    scores = rng.lognormal(0.0, 0.3, size=50)
    thr = upper_threshold(scores, 0.01)
    fresh = rng.lognormal(0.0, 0.3, size=100_000)
    rejected = (fresh >= thr).mean()
    assert 0.002 < rejected < 0.03
    assert thr >= np.quantile(scores, 0.99)  # never below the empirical quantile


def test_threshold_keeps_the_target_rate_with_only_a_few_held_out_parts():
    """With 4 held-out scores the fitted spread is often far too small; the prediction
    bound allows for that, so on average a new good part is rejected at the target rate."""
    from statistics import NormalDist

    rng = np.random.default_rng(2)
    sigma, target = 0.3, 0.01
    rates = [
        1.0 - NormalDist(0.0, sigma).cdf(np.log(upper_threshold(rng.lognormal(0.0, sigma, size=4), target)))
        for _ in range(4000)
    ]
    assert 0.005 < np.mean(rates) < 0.015
    plain = [
        1.0
        - NormalDist().cdf(
            NormalDist().inv_cdf(1 - target) * np.std(np.log(x), ddof=1) / sigma + np.mean(np.log(x)) / sigma
        )
        for x in rng.lognormal(0.0, sigma, size=(4000, 4))
    ]
    assert np.mean(plain) > 0.04  # what a plain normal quantile of the fit would reject


def test_calibrated_scale_puts_threshold_at_one():
    rng = np.random.default_rng(1)
    pixels = rng.gamma(2.0, 0.01, size=100_000)
    scores = rng.gamma(20.0, 0.005, size=30)
    cal = calibrate(scores, pixels, 0.01, 0.005)
    thr_raw = upper_threshold(scores, 0.01)
    assert (thr_raw - cal.map_center) / cal.map_scale == pytest.approx(1.0)
    assert cal.map_center == pytest.approx(np.median(pixels))
    assert 0.05 <= cal.pixel_threshold <= 1.0
    flagged = ((pixels - cal.map_center) / cal.map_scale >= cal.pixel_threshold).mean()
    assert flagged == pytest.approx(0.005, abs=0.002)


def test_no_holdout_is_an_error():
    with pytest.raises(ValueError, match="no held-out"):
        upper_threshold(np.array([]), 0.01)


def _edge_maps(n: int, edge_gain: float, seed: int = 0, size: int = EDGE_SIZE) -> np.ndarray:
    """Good-part maps whose outer rings are noisier (and higher) by up to edge_gain at
    the border, fading to the interior's level 20 px in."""
    rng = np.random.default_rng(seed)
    gain = 1.0 + (edge_gain - 1.0) * np.clip(1.0 - edge_rings(size) / 12.0, 0.0, 1.0)
    return (1.0 + 0.1 * rng.standard_normal((n, size, size)) * gain + 0.05 * (gain - 1.0)).astype(np.float32)


def _profile(maps: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    return edge_profile(maps, np.ones_like(maps, dtype=bool) if valid is None else valid, RINGS, EDGE_BAND)


def test_edge_calibration_brings_every_ring_to_the_interior():
    band, rings = EDGE_BAND, RINGS
    centre, scale = _profile(_edge_maps(12, edge_gain=3.0))
    assert scale[0] > 2.0 and np.all(scale >= 1.0)
    assert np.all(centre[band:] == 0) and np.all(scale[band:] == 1)  # the interior is left alone
    fresh = _edge_maps(12, edge_gain=3.0, seed=1)  # other images of the same kind
    out = (fresh - centre[rings]) / scale[rings]
    inner = out[:, rings >= band]
    tail = np.quantile(inner, EDGE_TAIL) - np.median(inner)
    for d in (0, 4, 8, 12):
        ring = out[:, rings == d]
        assert abs(np.median(ring) - np.median(inner)) < 0.02
        assert abs((np.quantile(ring, EDGE_TAIL) - np.median(ring)) / tail - 1.0) < 0.2
    before = fresh[:, rings == 0]
    assert np.quantile(before, EDGE_TAIL) - np.median(before) > 2.5 * tail  # what it corrected


def test_edge_calibration_leaves_a_frame_without_edge_effect_and_ignores_padding():
    maps = _edge_maps(12, edge_gain=1.0)
    centre, scale = _profile(maps)
    assert np.all(scale < 1.15) and np.all(np.abs(centre) < 0.15)
    # letterbox padding (top and bottom 20 rows) full of wild values is not measured
    padded = maps.copy()
    padded[:, :20] = padded[:, -20:] = 50.0
    valid = np.ones_like(maps, dtype=bool)
    valid[:, :20] = valid[:, -20:] = False
    centre_p, scale_p = _profile(padded, valid)
    assert np.all(scale_p < 1.15) and np.all(np.abs(centre_p) < 0.15)


def test_edge_calibration_never_raises_a_ring_or_flattens_a_calm_centre():
    """A ring calmer than the part inside it is not made more sensitive (no pixel above
    the median is raised); a centre calmer than a broad outskirt is no edge effect: with the
    neighbouring annulus as reference, only the rings that differ from it are damped."""
    rings, shape = RINGS, (12, EDGE_SIZE, EDGE_SIZE)
    rng = np.random.default_rng(0)
    calm_edge = (1.0 + 0.1 * rng.standard_normal(shape) * np.where(rings < 8, 0.3, 1.0)).astype(np.float32)
    centre, scale = _profile(calm_edge)
    out = (calm_edge - centre[rings]) / scale[rings]
    upper = (calm_edge >= np.median(calm_edge)) & (rings < EDGE_BAND)[None]  # what a score is made of
    assert np.all(out[upper] <= calm_edge[upper] + 1e-5)  # nothing raised
    calm_centre = (1.0 + 0.1 * rng.standard_normal(shape) * np.where(rings >= 48, 0.3, 1.0)).astype(np.float32)
    _, scale = _profile(calm_centre)
    assert np.all(scale < 1.15)


def test_decision_threshold_is_capped_by_painted_defects_but_not_below_the_false_reject_floor():
    from anomaly.training.calibrate import decision_threshold, upper_threshold

    good = np.random.default_rng(0).lognormal(-1.5, 0.3, 5)  # few scores: a loose good-only bound
    high, low = upper_threshold(good, 0.01), upper_threshold(good, 0.03)
    t, how, _ = decision_threshold(good, np.full(10, 10 * high), 0.01)
    assert t == high and how == "good scores"  # painted defects far above: nothing to gain
    mid = 0.5 * (low + high)
    t, how, levels = decision_threshold(good, np.full(10, mid), 0.01)
    assert t == mid and how == "painted defects" and levels["good_bound"] == high
    t, how, _ = decision_threshold(good, np.full(10, good.min()), 0.01)
    assert t == low  # painted defects that look like good parts never push it into them
