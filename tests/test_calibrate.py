"""Calibration puts the image threshold at 1.0 and sets thresholds for target rates."""

import numpy as np
import pytest

from anomaly.calibrate import calibrate, upper_threshold


def test_threshold_rejects_about_the_target_share_of_good_parts():
    rng = np.random.default_rng(0)
    scores = rng.lognormal(0.0, 0.3, size=50)
    thr = upper_threshold(scores, 0.01)
    fresh = rng.lognormal(0.0, 0.3, size=100_000)
    rejected = (fresh >= thr).mean()
    assert 0.002 < rejected < 0.03
    assert thr >= np.quantile(scores, 0.99)  # never below the empirical quantile


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
