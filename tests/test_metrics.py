"""Tests for anomaly.evaluation.metrics: checked against scikit-learn, brute force and hand calculations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as label_regions
from sklearn.metrics import f1_score as sk_f1_score
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from anomaly.evaluation.metrics import (
    best_f1_threshold,
    confusion,
    f1_operating_threshold,
    f1_score,
    roc_auc,
    roc_curve,
)
from anomaly.evaluation.pixel_metrics import aupro, pixel_auroc, pixel_f1_threshold


def tied_data(seed: int, n: int = 400, levels: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores on a coarse grid (many ties), positives scoring a bit higher."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = np.round(rng.random(n) * levels + 2.0 * y) / levels
    return y, s


def random_masks_maps(seed: int, n_images: int = 4, size: int = 16, levels: int = 20):
    """Small masks with a few rectangular defects (and one good image), tied scores."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n_images):
        mask = np.zeros((size, size), dtype=bool)
        if i > 0:  # image 0 is defect-free
            for _ in range(rng.integers(1, 4)):
                r, c = rng.integers(0, size - 2, 2)
                h, w = rng.integers(1, 5, 2)
                mask[r : r + h, c : c + w] = True
        amap = np.round((rng.random((size, size)) + 0.6 * mask) * levels) / levels
        masks.append(mask)
        maps.append(amap)
    return masks, maps


def brute_force_aupro(masks, maps, fpr_limit: float) -> float:
    """Reference AUPRO by looping over every distinct score as a threshold (slow, obvious)."""
    region_masks = []
    for i, mask in enumerate(masks):
        lab, n = label_regions(mask, connectivity=2, return_num=True)
        region_masks += [(i, lab == k) for k in range(1, n + 1)]
    n_normal = sum(int((~m).sum()) for m in masks)
    fprs, pros = [0.0], [0.0]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        fprs.append(sum(int(((a >= t) & ~m).sum()) for m, a in zip(masks, maps)) / n_normal)
        pros.append(np.mean([(maps[i][r] >= t).mean() for i, r in region_masks]))
    area = 0.0
    for x0, x1, y0, y1 in zip(fprs[:-1], fprs[1:], pros[:-1], pros[1:]):
        if x1 <= x0 or x0 >= fpr_limit:
            continue
        xe = min(x1, fpr_limit)
        ye = y0 + (y1 - y0) * (xe - x0) / (x1 - x0)
        area += (xe - x0) * (y0 + ye) / 2
    return area / fpr_limit


# ---------------------------------------------------------------------------- ROC


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed):
    y, s = tied_data(seed)
    expected = roc_auc_score(y, s)
    assert 0.6 < expected < 0.99  # informative data, not a degenerate case
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-9)
    fpr, tpr, _ = roc_curve(y, s)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected, abs=1e-9)


def test_roc_curve_matches_sklearn_points():
    y, s = tied_data(7)
    fpr, tpr, thr = roc_curve(y.astype(int), s)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert thr[0] == np.inf and sk_thr[0] == np.inf
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])
    assert len(thr) == len(np.unique(s)) + 1  # one point per distinct score


def test_roc_auc_small_hand_case():
    # positives {0.8, 0.5}, negatives {0.5, 0.1}: pairs (0.8>0.5),(0.8>0.1),(0.5=0.5 -> 1/2),(0.5>0.1)
    assert roc_auc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.1]) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("fn", [roc_auc, roc_curve])
@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], [False, False]])
def test_one_class_raises(fn, labels):
    with pytest.raises(ValueError, match="only one class"):
        fn(labels, np.linspace(0, 1, len(labels)))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="bool or 0/1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="entries"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])


# ----------------------------------------------------------------------- pixel AUROC


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_auroc_matches_sklearn_on_flattened(dtype):
    masks, maps = random_masks_maps(3, n_images=6, size=32)
    maps = [m.astype(dtype) for m in maps]
    expected = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([m.ravel() for m in maps]))
    assert 0.6 < expected < 0.99
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-9)


def test_pixel_auroc_accepts_uint8_masks_and_checks_shapes():
    masks, maps = random_masks_maps(4)
    as_png = [m.astype(np.uint8) * 255 for m in masks]
    assert pixel_auroc(as_png, maps) == pixel_auroc(masks, maps)
    with pytest.raises(ValueError, match="same 2-D shape"):
        pixel_auroc([masks[0]], [maps[0][:-1]])
    with pytest.raises(ValueError, match="no defect pixels"):
        pixel_auroc([np.zeros((4, 4), bool)], [np.zeros((4, 4))])


# ---------------------------------------------------------------------------- AUPRO


def hand_case():
    """One 3x5 image, two regions of different sizes, 10 normal pixels.

    mask            map
    A A . . .       0.80 0.80 0.95 0.70 0.40
    A A . . B       0.60 0.60 0.30 0.20 0.90
    . . . . .       0.60 0.10 0.05 0.02 0.01
    Region A (4 px, top-left) and region B (1 px at (1,4)) are not 8-connected.
    Normal scores: 0.95 0.70 0.60 0.40 0.30 0.20 0.10 0.05 0.02 0.01 (FPR step 0.1).
    B is found at t=0.9, A only half at 0.8 and fully at 0.6, where it ties a normal pixel.
    """
    mask = np.zeros((3, 5), dtype=bool)
    mask[0:2, 0:2] = True
    mask[1, 4] = True
    amap = np.array(
        [
            [0.80, 0.80, 0.95, 0.70, 0.40],
            [0.60, 0.60, 0.30, 0.20, 0.90],
            [0.60, 0.10, 0.05, 0.02, 0.01],
        ]
    )
    return mask, amap


def test_aupro_hand_computed_two_regions():
    # Curve (threshold: FPR, PRO = mean(frac A, frac B)):
    #   inf : 0.0, 0
    #   0.95: 0.1, 0                (one normal pixel)
    #   0.90: 0.1, (0 + 1)/2 = 0.5  (B found; vertical step, no area)
    #   0.80: 0.1, (1/2 + 1)/2 = 0.75
    #   0.70: 0.2, 0.75
    #   0.60: 0.3, 1.0              (A's last 2 px tie the normal 0.60: diagonal segment)
    # Area to 0.3: [0.1,0.2] 0.1*0.75 = 0.075; [0.2,0.3] 0.1*(0.75+1)/2 = 0.0875.
    #   total 0.1625, normalised 0.1625/0.3 = 0.541666...
    # Area to 0.25: curve at 0.25 is halfway along the diagonal: PRO 0.875;
    #   0.075 + 0.05*(0.75+0.875)/2 = 0.115625, normalised /0.25 = 0.4625.
    # Area to 0.1: PRO is 0 on [0, 0.1], so 0.
    # Area to 1.0: the part above 0.3 is PRO 1 over 0.7 -> (0.1625 + 0.7)/1 = 0.8625.
    mask, amap = hand_case()
    assert aupro([mask], [amap], fpr_limit=0.3) == pytest.approx(0.1625 / 0.3, abs=1e-12)
    assert aupro([mask], [amap], fpr_limit=0.25) == pytest.approx(0.4625, abs=1e-12)
    assert aupro([mask], [amap], fpr_limit=0.1) == pytest.approx(0.0, abs=1e-12)
    assert aupro([mask], [amap], fpr_limit=1.0) == pytest.approx(0.8625, abs=1e-12)


def test_aupro_hand_computed_regions_pooled_across_images():
    # Image 1: one 1-px region scored 0.9 and 3 normal pixels 0.5, 0.3, 0.1.
    # Image 2: one 3-px region scored 0.9, 0.2, 0.2 and 1 normal pixel 0.4.
    # Image 3: defect-free, 4 normal pixels 0.8, 0.05, 0.05, 0.05.
    # 8 normal pixels (FPR step 1/8), 2 regions (each weighs 1/2; a pixel of the
    # 3-px region adds 1/6 to PRO). Curve:
    #   0.9: FPR 0,   PRO 1/2 + 1/6 = 2/3
    #   0.8: FPR 1/8, PRO 2/3        (normal in image 3)
    #   0.5: FPR 2/8; 0.4: 3/8; 0.3: 4/8; PRO stays 2/3 down to t=0.3
    # To fpr_limit 0.3 PRO is 2/3 on all of [0, 0.3]: area 0.3*2/3, normalised 2/3.
    # If pixel regions were pooled per pixel instead of per region, PRO would be
    # (1+1)/4 = 1/2 there, so this checks the per-region weighting.
    m1 = np.array([[True, False], [False, False]])
    a1 = np.array([[0.9, 0.5], [0.3, 0.1]])
    m2 = np.array([[True, True], [True, False]])
    a2 = np.array([[0.9, 0.2], [0.2, 0.4]])
    m3 = np.zeros((2, 2), dtype=bool)
    a3 = np.array([[0.8, 0.05], [0.05, 0.05]])
    assert aupro([m1, m2, m3], [a1, a2, a3], fpr_limit=0.3) == pytest.approx(2 / 3, abs=1e-12)
    # To 0.6: after t=0.3 (FPR 4/8) the two 0.2 pixels (no normal pixel scores 0.2) are a
    # vertical step to PRO 1 at FPR 0.5. Area: 0.5*2/3 + 0.1*1 = 0.4333..., normalised /0.6.
    assert aupro([m1, m2, m3], [a1, a2, a3], fpr_limit=0.6) == pytest.approx((0.5 * 2 / 3 + 0.1) / 0.6, abs=1e-12)


def test_aupro_regions_are_8_connected():
    # (0,0) and (1,1) touch diagonally: one region with 8-connectivity; (3,3) is a second.
    # Normal pixels score 0.1; (0,0) and (3,3) score 0.9, (1,1) scores 0.0 (below all normals).
    # Above every normal pixel PRO = (1/2 + 1)/2 = 0.75 and stays so until FPR = 1,
    # so the normalised AUPRO is 0.75. With 4-connectivity it would be (1 + 0 + 1)/3 = 2/3.
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = True
    amap = np.full((4, 4), 0.1)
    amap[0, 0] = amap[3, 3] = 0.9
    amap[1, 1] = 0.0
    assert aupro([mask], [amap]) == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_matches_brute_force_thresholds(seed, fpr_limit):
    masks, maps = random_masks_maps(seed)
    expected = brute_force_aupro(masks, maps, fpr_limit)
    assert 0.0 < expected < 1.0
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-12)


def test_aupro_perfect_and_inverted_maps():
    masks, _ = random_masks_maps(5)
    assert aupro(masks, [m.astype(np.float32) for m in masks]) == pytest.approx(1.0, abs=1e-12)
    assert aupro(masks, [(~m).astype(np.float32) for m in masks]) == pytest.approx(0.0, abs=1e-12)


def test_aupro_uniform_random_map_is_half_the_limit():
    # Uniform scores independent of the masks: every region's flagged fraction and the FPR
    # both equal P(score >= t), so PRO(FPR) = FPR and the normalised area is 0.3/2 = 0.15.
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(10):
        mask = np.zeros((64, 64), dtype=bool)
        for r, c in rng.integers(0, 54, (3, 2)):
            mask[r : r + rng.integers(4, 10), c : c + rng.integers(4, 10)] = True
        masks.append(mask)
    maps = [rng.random((64, 64), dtype=np.float32) for _ in masks]
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.15, abs=0.01)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5, abs=0.02)


def test_aupro_errors():
    with pytest.raises(ValueError, match="no defect regions"):
        aupro([np.zeros((4, 4), bool)], [np.zeros((4, 4))])
    mask, amap = hand_case()
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro([mask], [amap], fpr_limit=0.0)
    with pytest.raises(ValueError, match="one mask per map"):
        aupro([mask], [])


# ------------------------------------------------------------------------------- F1


def test_confusion_and_f1_counts():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    predicted = [1, 0, 1, 1, 0, 0, 1, 0]
    # tp: idx 0,2 -> 2; fp: idx 3,6 -> 2; fn: idx 1,7 -> 2; tn: idx 4,5 -> 2
    assert confusion(labels, predicted) == {"tp": 2, "fp": 2, "tn": 2, "fn": 2}
    assert confusion(np.array(labels, bool), np.array([True] * 8)) == {"tp": 4, "fp": 4, "tn": 0, "fn": 0}
    c = confusion(labels, predicted)
    assert all(type(v) is int for v in c.values())
    assert f1_score(labels, predicted) == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert f1_score(labels, predicted) == pytest.approx(sk_f1_score(labels, predicted))
    assert f1_score([0, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="entries"):
        confusion([0, 1], [0, 1, 1])


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_threshold_matches_brute_force(seed):
    y, s = tied_data(seed, n=200, levels=8)
    best_t, best_f1 = None, -1.0
    for t in np.unique(s)[::-1]:  # highest threshold first, keep the first maximum
        f1 = sk_f1_score(y, s >= t)
        if f1 > best_f1 + 1e-15:
            best_t, best_f1 = t, f1
    t, f1 = best_f1_threshold(y, s)
    assert t == best_t
    assert f1 == pytest.approx(best_f1, abs=1e-12)
    assert f1_score(y, s >= t) == pytest.approx(f1, abs=1e-12)


def test_best_f1_threshold_ties_and_hand_case():
    # scores 0.9(1) 0.7(0) 0.7(1) 0.2(1) 0.1(0), 3 positives.
    # t=0.9: tp1 pred1 -> 2/(1+3)=0.5; t=0.7: tp2 pred3 -> 4/6; t=0.2: tp3 pred4 -> 6/7; t=0.1: 6/8
    # The tie at 0.7 must be taken as a whole (tp2 with pred2 = 4/5 is not reachable).
    t, f1 = best_f1_threshold([1, 0, 1, 1, 0], [0.9, 0.7, 0.7, 0.2, 0.1])
    assert t == 0.2 and f1 == pytest.approx(6 / 7)
    # Equal best F1 at two thresholds -> the higher threshold is returned.
    # t=0.8: tp1 pred1 -> 2/3; t=0.5: tp2 pred4 -> 4/6 = 2/3; t=0.1: tp2 pred5 -> 4/7
    t, f1 = best_f1_threshold([1, 0, 0, 1, 0], [0.8, 0.5, 0.5, 0.5, 0.1])
    assert t == 0.8 and f1 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="none of the 3 labels is positive"):
        best_f1_threshold([0, 0, 0], [0.1, 0.2, 0.3])


def test_pixel_f1_threshold_full_and_subsampled():
    rng = np.random.default_rng(6)
    masks, maps = [], []
    for _ in range(20):
        mask = np.zeros((64, 64), dtype=bool)
        r, c = rng.integers(0, 44, 2)
        mask[r : r + 20, c : c + 20] = True
        masks.append(mask)
        maps.append((rng.normal(size=(64, 64)) + 2.0 * mask).astype(np.float32))
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([a.ravel() for a in maps])
    t_full, f1_full = best_f1_threshold(y, s)
    assert 0.6 < f1_full < 0.95
    # under the limit: all pixels, identical to the pooled best_f1_threshold
    assert pixel_f1_threshold(masks, maps) == (t_full, f1_full)
    # 20k of 81,920 pixels: reproducible with a seed, close to the full optimum
    t_sub, f1_sub = pixel_f1_threshold(masks, maps, max_pixels=20_000, seed=1)
    assert pixel_f1_threshold(masks, maps, max_pixels=20_000, seed=1) == (t_sub, f1_sub)
    assert pixel_f1_threshold(masks, maps, max_pixels=20_000, seed=2) != (t_sub, f1_sub)
    assert t_sub == pytest.approx(t_full, abs=0.15)
    assert f1_sub == pytest.approx(f1_full, abs=0.02)
    assert f1_score(y, s >= t_sub) == pytest.approx(f1_full, abs=0.005)  # near-optimal on all pixels


def test_operating_threshold_sits_mid_gap_with_the_same_f1():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    scores = np.array([0.2, 0.5, 0.9, 3.0, 3.4, 5.0, 0.1, 2.0])
    edge, f1 = best_f1_threshold(labels, scores)
    assert edge == 2.0 and f1 == 1.0  # on the weakest defect
    t, f1_mid = f1_operating_threshold(labels, scores)
    assert t == pytest.approx(1.45) and f1_mid == f1  # halfway to the strongest good part
    assert sk_f1_score(labels, scores >= t) == pytest.approx(f1)
    # overlapping classes: still the same predictions as the best-F1 threshold
    rng = np.random.default_rng(4)
    y = rng.random(200) < 0.3
    s = rng.normal(0, 1, 200) + 1.5 * y
    edge, f1 = best_f1_threshold(y, s)
    t, f1_mid = f1_operating_threshold(y, s)
    assert t < edge and ((s >= t) == (s >= edge)).all() and f1_mid == f1
    # nothing below the best threshold: it stays where it is
    assert f1_operating_threshold([1, 1], [0.5, 0.7]) == best_f1_threshold([1, 1], [0.5, 0.7])
