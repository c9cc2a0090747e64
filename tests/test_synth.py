"""The demo dataset: MVTec layout, exact non-empty masks, determinism, size budget."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.inspection.imageio import read_image, read_mask
from anomaly.synthetic import demo as synth
from anomaly.synthetic import scenes

SMALL = dict(size=96, n_train=3, n_test_good=2, n_per_defect=2)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_layout_is_mvtec_like(tmp_path: Path, category: str) -> None:
    root = synth.generate_dataset(tmp_path, seed=3, category=category, **SMALL)
    assert root == tmp_path / category
    kinds = scenes.WASHER_DEFECTS if category == "washer" else scenes.TEXTURE_DEFECTS

    train = sorted((root / "train" / "good").glob("*.png"))
    assert [p.name for p in train] == ["000.png", "001.png", "002.png"]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["good"]
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(("good",) + kinds)
    assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(kinds), "good images have no masks"
    assert len(list((root / "test" / "good").glob("*.png"))) == 2

    for kind in kinds:
        images = sorted((root / "test" / kind).glob("*.png"))
        masks = sorted((root / "ground_truth" / kind).glob("*.png"))
        assert len(images) == 2
        assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in images]
        for image_path, mask_path in zip(images, masks):
            image = read_image(image_path)
            raw = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert raw.ndim == 2 and raw.dtype == np.uint8, "masks are single-channel 8-bit"
            assert raw.shape == image.shape[:2] == (96, 96)
            assert set(np.unique(raw)) == {0, 255}, "mask is 0/255 and non-empty"
            assert read_mask(mask_path, raw.shape).sum() < 0.25 * raw.size, "defects stay realistic in size"
    assert "seed=3" in (root / "README.txt").read_text()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = _files(synth.generate_dataset(tmp_path / "a", seed=5, **SMALL))
    b = _files(synth.generate_dataset(tmp_path / "b", seed=5, **SMALL))
    c = _files(synth.generate_dataset(tmp_path / "c", seed=6, **SMALL))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_rerun_with_fewer_images_leaves_nothing_stale(tmp_path: Path) -> None:
    synth.generate_dataset(tmp_path, seed=0, category="texture", **SMALL)
    root = synth.generate_dataset(
        tmp_path, seed=0, category="texture", size=96, n_train=1, n_test_good=1, n_per_defect=1
    )
    assert len(list((root / "train" / "good").glob("*.png"))) == 1
    assert len(list((root / "ground_truth" / "cut").glob("*.png"))) == 1


def test_washer_images_vary_but_only_slightly(tmp_path: Path) -> None:
    root = synth.generate_dataset(tmp_path, seed=1, size=128, n_train=4, n_test_good=0, n_per_defect=0)
    images = [read_image(p) for p in sorted((root / "train" / "good").glob("*.png"))]
    for other in images[1:]:
        diff = np.abs(other - images[0]).mean()
        assert 0.003 < diff < 0.08, "parts differ a little (jitter, texture, noise), not wholesale"
    centre = [img[64, 64].mean() for img in images]  # inside the hole: background
    ring = [img[64, 64 + 34].mean() for img in images]  # on the metal
    assert max(centre) < min(ring) - 0.15, "a bright metal ring around a dark hole"


def test_washer_defects_stay_on_the_part() -> None:
    for i, kind in enumerate(scenes.WASHER_DEFECTS):
        rng = np.random.default_rng(i)
        render = scenes.render_washer(rng, 128)
        spec = synth._CATEGORY_SPECS["washer"]
        image, mask = synth._paint_visible(spec, kind, render, rng)
        assert mask.any() and not (mask & ~render.part).any(), kind
        clean = synth._to_gray(render.image)
        assert np.array_equal(image != clean, mask), f"{kind}: mask not exact in the saved grey image"


def test_unknown_category_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="washer.*texture"):
        synth.generate_dataset(tmp_path, category="bolt")


def test_default_washer_dataset_fits_the_budget(tmp_path: Path) -> None:
    root = synth.generate_dataset(tmp_path)
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 8_000_000
    assert len(list((root / "train" / "good").glob("*.png"))) == 60
    assert all(len(list((root / "test" / k).glob("*.png"))) == 5 for k in scenes.WASHER_DEFECTS)
