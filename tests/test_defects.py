"""Synthetic defects: masks must be exact and non-empty, draws reproducible, constraints kept.

The masks are training targets and ground truth, so the properties checked
here are the contract: True exactly where the image changed, the change there
visible, nothing outside it touched.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from anomaly.synthetic import defects
from anomaly.synthetic.defects import DEFECT_KINDS, VISIBLE_DELTA, DefectSettings, random_defect

SIZE = 96


def _textured(size: int = SIZE, seed: int = 7) -> np.ndarray:
    """A mid-grey, smoothly textured colour image, like a part surface."""
    rng = np.random.default_rng(seed)
    base = 0.5 + 0.15 * defects.perlin_noise((size, size), rng, res=(3, 3), octaves=3)
    tint = np.array([1.0, 0.95, 0.9], np.float32)
    return np.clip(base[:, :, None] * tint, 0, 1).astype(np.float32)


def _assert_exact(image: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
    """The mask contract: bool (H, W), non-empty, True exactly where the image changed visibly."""
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    assert out.dtype == np.float32 and out.shape == image.shape
    assert mask.any(), "mask is empty"
    diff = np.abs(out - image).max(axis=2)
    assert np.array_equal(diff > 0, mask), "pixels changed outside the mask or unchanged inside it"
    assert diff[mask].min() >= VISIBLE_DELTA - 1e-6, "a mask pixel changed invisibly"
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("scale", [0.005, 0.05, 0.3])
def test_mask_is_exact_and_non_empty(kind: str, scale: float) -> None:
    image = _textured()
    before = image.copy()
    for seed in range(4):
        out, mask = defects.DEFECTS[kind](image, np.random.default_rng(seed), scale)
        _assert_exact(image, out, mask)
    assert np.array_equal(image, before), "painter modified its input"


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_mask_non_empty_even_where_the_draw_is_hard_to_see(kind: str, fill: float) -> None:
    """On black or white, darkening/brightening painters are invisible; retries must still deliver."""
    image = np.full((48, 48, 3), fill, np.float32)
    out, mask = defects.DEFECTS[kind](image, np.random.default_rng(3), 0.05)
    _assert_exact(image, out, mask)


def test_tiny_defects_are_tiny_and_large_ones_large() -> None:
    image = _textured(128)
    for kind in ("scratch", "stain", "dent", "cut_paste"):
        tiny = [defects.DEFECTS[kind](image, np.random.default_rng(s), 0.005)[1].sum() for s in range(5)]
        large = [defects.DEFECTS[kind](image, np.random.default_rng(s), 0.3)[1].sum() for s in range(5)]
        assert max(tiny) <= 80, (kind, tiny)
        assert np.median(large) > 4 * np.median(tiny), (kind, tiny, large)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_same_seed_same_bytes(kind: str) -> None:
    image = _textured()
    a_img, a_mask = defects.DEFECTS[kind](image, np.random.default_rng(11), 0.1)
    b_img, b_mask = defects.DEFECTS[kind](image, np.random.default_rng(11), 0.1)
    c_img, _ = defects.DEFECTS[kind](image, np.random.default_rng(12), 0.1)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    assert a_img.tobytes() != c_img.tobytes()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_foreground_constraint_is_respected(kind: str) -> None:
    image = _textured()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disk = (yy - 60) ** 2 + (xx - 30) ** 2 < 18**2  # small, off-centre part
    for seed in range(6):
        out, mask = defects.DEFECTS[kind](image, np.random.default_rng(seed), 0.15, region=disk)
        _assert_exact(image, out, mask)
        assert not (mask & ~disk).any(), "defect leaked off the part"
        assert np.array_equal(out[~disk], image[~disk])


def test_random_defect_picks_allowed_kinds_on_the_foreground() -> None:
    image = _textured()
    fg = np.zeros((SIZE, SIZE), bool)
    fg[20:70, 30:90] = True
    seen = set()
    for seed in range(30):
        out, mask, kind = random_defect(
            image, np.random.default_rng(seed), kinds=("stain", "crack", "pits"), scale_range=(0.02, 0.2), foreground=fg
        )
        seen.add(kind)
        _assert_exact(image, out, mask)
        assert not (mask & ~fg).any()
    assert seen == {"stain", "crack", "pits"}


def test_random_defect_rejects_bad_arguments() -> None:
    image, rng = _textured(), np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown defect kind"):
        random_defect(image, rng, kinds=("scratch", "nonsense"))
    with pytest.raises(ValueError, match="scale_range"):
        random_defect(image, rng, scale_range=(0.3, 0.1))
    with pytest.raises(ValueError, match="empty"):
        random_defect(image, rng, foreground=np.zeros((SIZE, SIZE), bool))
    with pytest.raises(ValueError, match="shape"):
        random_defect(image, rng, foreground=np.ones((10, 10), bool))


def test_dent_is_dark_on_one_side_bright_on_the_other() -> None:
    image = np.full((80, 80, 3), 0.5, np.float32)
    # light from +x: in a depression the wall on the +x side faces away from it (dark), the -x wall is lit
    out, mask = defects.dent(image, np.random.default_rng(1), 0.3, center=(40.0, 40.0), light_angle=0.0)
    delta = (out - image).mean(axis=2)
    assert delta[mask].min() < -VISIBLE_DELTA and delta[mask].max() > VISIBLE_DELTA
    left, right = delta[:, :40][mask[:, :40]].mean(), delta[:, 40:][mask[:, 40:]].mean()
    assert right < left, "the wall nearer the light should be in shadow, the far wall lit"


def test_missing_material_shows_the_given_background() -> None:
    image = _textured()
    colour = np.array([0.05, 0.1, 0.9], np.float32)
    out, mask = defects.missing_material(image, np.random.default_rng(2), 0.3, center=(48.0, 48.0), background=colour)
    _assert_exact(image, out, mask)
    close = np.abs(out[mask] - colour).max(axis=1) < 0.02
    assert close.mean() > 0.5, "most of the changed area (hole, not edge) should be background colour"


def test_foreign_texture_uses_the_callers_texture() -> None:
    image = _textured()
    red = np.zeros((40, 40, 3), np.uint8)
    red[:, :, 0] = 255
    out, mask = defects.perlin_foreign_texture(
        image, np.random.default_rng(4), 0.4, center=(48.0, 48.0), texture=red, opacity=(1.0, 1.0)
    )
    _assert_exact(image, out, mask)
    pure = np.all(np.abs(out[mask] - [1.0, 0.0, 0.0]) < 1e-3, axis=1)
    assert pure.mean() > 0.3, "the interior (not the soft edge) should be the texture itself"


def test_cut_paste_copies_the_images_own_pixels() -> None:
    """Pasting from a two-colour image can only produce blends of those two colours."""
    image = np.zeros((64, 64, 3), np.float32)
    image[:, :32] = [0.8, 0.2, 0.2]
    image[:, 32:] = [0.2, 0.2, 0.8]
    out, mask = defects.cut_paste(image, np.random.default_rng(5), 0.4)
    _assert_exact(image, out, mask)
    red_or_blue_mix = np.abs(out[mask][:, 1] - 0.2) < 1e-4  # green channel identical in both colours
    assert red_or_blue_mix.all()


def test_perlin_noise_is_smooth_bounded_and_reproducible() -> None:
    a = defects.perlin_noise((64, 80), np.random.default_rng(0), res=(4, 5), octaves=2)
    b = defects.perlin_noise((64, 80), np.random.default_rng(0), res=(4, 5), octaves=2)
    assert a.shape == (64, 80) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0 and a.std() > 0.05
    step = np.abs(np.diff(a, axis=1)).mean()
    assert step < 0.2 * (a.max() - a.min()), "neighbouring values should be close (smooth noise)"


def test_defect_settings_round_trip_through_json() -> None:
    settings = DefectSettings(kinds=("scratch", "stain"), scale_range=(0.02, 0.1), probability=0.3)
    again = DefectSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again == settings
    assert DefectSettings.from_dict({}) == DefectSettings()
    with pytest.raises(ValueError):
        DefectSettings.from_dict({"kinds": ["bogus"]})
    with pytest.raises(ValueError):
        DefectSettings.from_dict({"probability": 1.5})
    with pytest.raises(ValueError):
        DefectSettings.from_dict({"colour": "red"})


def test_defect_settings_apply_honours_probability() -> None:
    image = _textured()
    never = DefectSettings(probability=0.0)
    out, mask, kind = never.apply(image, np.random.default_rng(0))
    assert kind is None and not mask.any() and np.array_equal(out, image)
    always = DefectSettings(kinds=("pits",), probability=1.0)
    out, mask, kind = always.apply(image, np.random.default_rng(0))
    assert kind == "pits"
    _assert_exact(image, out, mask)


def test_painters_are_fast_at_256() -> None:
    """Budget is 20 ms per call at 256x256; the bound here is loose for a busy CI machine."""
    image = _textured(256)
    for kind in DEFECT_KINDS:
        times = []
        for seed in range(3):
            start = time.perf_counter()
            defects.DEFECTS[kind](image, np.random.default_rng(seed), 0.2)
            times.append(time.perf_counter() - start)
        assert min(times) < 0.1, (kind, times)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defects_on_a_gray_part_are_gray(kind: str) -> None:
    """A gray camera sees no colour: a model trained on coloured synthetic defects on
    gray parts would learn a cue that real defects there never show."""
    rng = np.random.default_rng(11)
    shade = defects.smooth_noise((96, 96), rng, cells=4.0) * 0.3 + 0.35
    gray = np.repeat(shade[:, :, None], 3, axis=2).astype(np.float32)
    assert defects.is_gray(gray)
    out, mask, _ = random_defect(gray, np.random.default_rng(5), kinds=[kind], scale_range=(0.1, 0.3))
    assert defects.is_gray(out) and mask.any()
    changed = np.abs(out[..., 0] - gray[..., 0]) >= VISIBLE_DELTA
    assert (changed == mask).all()  # the mask is exactly the visible gray change
    # a colour part keeps colour defects
    colour = gray.copy()
    colour[..., 0] *= 0.9
    out_c, _, _ = random_defect(colour, np.random.default_rng(5), kinds=[kind], scale_range=(0.1, 0.3))
    assert not defects.is_gray(out_c)
