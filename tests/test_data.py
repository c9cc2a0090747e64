"""Dataset discovery, the held-out split, and reporting of unreadable files."""

import numpy as np
import pytest

from anomaly.evaluation.datasets import (
    DatasetError,
    find_dataset,
    find_test_set,
    load_images,
    load_mask,
    sample_training,
    split_holdout,
)
from anomaly.inspection.imageio import save_image


def _img(path, value=0.5):
    save_image(path, np.full((16, 16, 3), value, np.float32))


def test_mvtec_layout_found_with_masks(tmp_path):
    for i in range(3):
        _img(tmp_path / "train/good" / f"{i:03d}.png")
    _img(tmp_path / "test/good/000.png")
    _img(tmp_path / "test/scratch/000.png")
    save_image(tmp_path / "ground_truth/scratch/000_mask.png", np.ones((16, 16), np.uint8) * 255)
    ds = find_dataset(tmp_path)
    assert ds.is_mvtec and len(ds.train) == 3
    test = find_test_set(tmp_path)
    assert [(s.defect, s.is_defective, s.mask_path is not None) for s in test] == [
        ("good", False, False),
        ("scratch", True, True),
    ]
    assert load_mask(test[1], (16, 16)).all() and not load_mask(test[0], (16, 16)).any()


def test_mvtec_ad2_layout_test_public_with_masks_inside(tmp_path):
    """MVTec AD 2: test_public/{good,bad}, masks in test_public/ground_truth/bad/."""
    for i in range(3):
        _img(tmp_path / "train/good" / f"{i:03d}.png")
    _img(tmp_path / "validation/good/000.png")
    _img(tmp_path / "test_public/good/000.png")
    _img(tmp_path / "test_public/bad/000_regular.png")
    _img(tmp_path / "test_public/bad/001_overexposed.png")
    save_image(tmp_path / "test_public/ground_truth/bad/000_regular_mask.png", np.ones((16, 16), np.uint8) * 255)
    ds = find_dataset(tmp_path)
    assert ds.is_mvtec and len(ds.train) == 3 and len(ds.validation) == 1
    test = find_test_set(tmp_path)
    assert [(s.path.name, s.defect, s.mask_path is not None) for s in test] == [
        ("000_regular.png", "bad", True),
        ("001_overexposed.png", "bad", False),
        ("000.png", "good", False),
    ]


def test_plain_folder_and_errors(tmp_path):
    _img(tmp_path / "a.png")
    assert len(find_dataset(tmp_path).train) == 1 and not find_dataset(tmp_path).is_mvtec
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="empty: no images found"):
        find_dataset(empty)
    with pytest.raises(DatasetError, match="missing: no such folder"):
        find_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="not an MVTec-style folder"):
        find_test_set(tmp_path)


def test_validation_folder_is_found_and_an_empty_one_is_an_error(tmp_path):
    for i in range(3):
        _img(tmp_path / "train/good" / f"{i:03d}.png")
    assert find_dataset(tmp_path).validation == []  # none: part of train/good is held out
    (tmp_path / "validation/good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="validation/good: no images found"):
        find_dataset(tmp_path)
    _img(tmp_path / "validation/good/v.png")
    ds = find_dataset(tmp_path)
    assert [p.name for p in ds.validation] == ["v.png"] and len(ds.train) == 3


def test_validation_images_are_the_held_out_set(tmp_path):
    """With validation/good, every train/good image is trained on and the validation
    images (only) stop training and calibrate; too few of them is a clear error."""
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector

    rng = np.random.default_rng(0)
    for i in range(8):
        save_image(tmp_path / "train/good" / f"{i:03d}.png", rng.uniform(0.4, 0.6, (32, 32, 3)).astype(np.float32))
    for i in range(3):
        save_image(tmp_path / "validation/good" / f"{i:03d}.png", rng.uniform(0.4, 0.6, (32, 32, 3)).astype(np.float32))
    cfg = ModelConfig(kind="ae", image_size=64, base_channels=8, latent_channels=4)
    with pytest.raises(DatasetError, match="validation/good: 3 images; calibration needs at least 4"):
        Detector(cfg, TrainConfig(epochs=1, batch_size=8, threads=1)).fit(tmp_path, progress=False)
    save_image(tmp_path / "validation/good/003.png", rng.uniform(0.4, 0.6, (32, 32, 3)).astype(np.float32))
    det = Detector(cfg, TrainConfig(epochs=1, batch_size=8, threads=1)).fit(tmp_path, progress=False)
    s = det.summary
    assert (s["train_count"], s["holdout_count"], s["holdout_from"]) == (8, 4, "validation/good")


def test_holdout_split_is_deterministic_and_disjoint(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(40)]
    fit, hold = split_holdout(paths, 0.15, 4, seed=3)
    assert len(hold) == 6 and len(fit) == 34 and not set(fit) & set(hold)
    assert split_holdout(paths, 0.15, 4, seed=3) == (fit, hold)
    with pytest.raises(DatasetError, match="at least 6"):
        split_holdout(paths[:5], 0.15, 4, seed=0)


def test_training_subset_is_seeded_ordered_and_only_past_the_limit(tmp_path):
    paths = [tmp_path / f"{i:03d}.png" for i in range(50)]
    subset = sample_training(paths, 20, seed=1)
    assert len(set(subset)) == 20 and set(subset) <= set(paths) and subset == sorted(subset)
    assert sample_training(paths, 20, seed=1) == subset and sample_training(paths, 20, seed=2) != subset
    assert sample_training(paths, 50, seed=1) == paths and sample_training(paths, 0, seed=1) == paths


def test_training_uses_at_most_max_train_images(tmp_path, tiny_dataset, capsys):
    """Past the limit only a random subset is read (held-out part included); the CLI says so."""
    import json

    from anomaly.cli import main

    pytest.importorskip("torch")
    out = tmp_path / "m"
    assert (
        main(
            [
                "train",
                str(tiny_dataset),
                "--out",
                str(out),
                "--model",
                "ae",
                "--image-size",
                "64",
                "--epochs",
                "1",
                "--quiet",
                "--max-train-images",
                "6",
            ]
        )
        == 0
    )
    s = json.loads((out / "config.json").read_text())["summary"]
    assert (s["train_count"] + s["holdout_count"], s["train_available"], s["not_read"]) == (6, 8, 2)
    assert "used a random 6 of the 8 good images" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(tiny_dataset),
                "--out",
                str(out),
                "--model",
                "ae",
                "--image-size",
                "64",
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    s = json.loads((out / "config.json").read_text())["summary"]
    assert s["train_count"] + s["holdout_count"] == 8 and s["not_read"] == 0
    assert "used a random" not in capsys.readouterr().err


def test_validation_folder_is_capped_at_the_held_out_share(tmp_path):
    """validation/good images are kept at up to 4x detail: at most the held-out share of
    max_train_images of them are used (never fewer than min_holdout)."""
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("validation", 9)):
        for i in range(n):
            save_image(
                tmp_path / split / "good" / f"{i:03d}.png", rng.uniform(0.4, 0.6, (32, 32, 3)).astype(np.float32)
            )
    cfg = ModelConfig(kind="ae", image_size=64, base_channels=8, latent_channels=4)
    s = (
        Detector(cfg, TrainConfig(epochs=1, batch_size=8, threads=1, max_train_images=40))
        .fit(tmp_path, progress=False)
        .summary
    )
    assert (s["train_count"], s["holdout_count"], s["validation_available"], s["not_read"]) == (8, 6, 9, 3)  # 15% of 40
    s = (
        Detector(cfg, TrainConfig(epochs=1, batch_size=8, threads=1, max_train_images=0))
        .fit(tmp_path, progress=False)
        .summary
    )
    assert (s["train_count"], s["holdout_count"], s["not_read"]) == (8, 9, 0)


def test_unreadable_images_are_reported_and_skipped(tmp_path):
    _img(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    warnings = []
    images, ok = load_images([tmp_path / "ok.png", tmp_path / "broken.png"], warn=warnings.append)
    assert len(images) == 1 and ok == [tmp_path / "ok.png"]
    assert len(warnings) == 1 and "broken.png" in warnings[0]


def test_labelled_defects_are_kept_at_4x_the_models_detail_with_hairlines(tmp_path):
    """`--defects` images far larger than the model sees are shrunk like the held-out ones;
    a 1-px crack in the mask must survive the shrinking."""
    from anomaly.config import ModelConfig
    from anomaly.training.detector import Detector

    big = np.full((1200, 1200), 0.5, np.float32)
    mask = np.zeros((1200, 1200), np.uint8)
    mask[100:1100, 600] = 255  # a hairline, 1 px wide
    _img(tmp_path / "test/good/000.png")
    save_image(tmp_path / "test/crack/000.png", np.dstack([big] * 3))
    save_image(tmp_path / "ground_truth/crack/000_mask.png", mask)
    labelled = Detector(ModelConfig())._load_labelled(tmp_path)
    (crack, crack_defective, crack_mask), (good, good_defective, good_mask) = labelled
    assert crack_defective and not good_defective
    assert crack.shape == (1024, 1024, 3) and crack_mask.shape == (1024, 1024)  # 4x the 256 grid
    rows_hit = crack_mask.any(axis=1)  # the crack's rows 100..1099 become 85..938 at 1024/1200
    assert rows_hit[90:930].all(), "the hairline must stay continuous"
    assert not rows_hit[:80].any() and not rows_hit[945:].any()
    assert crack_mask.sum() <= 2 * 1024, "and stay thin"
    assert good.shape == (16, 16, 3) and not good_mask.any()  # small images are kept as they are
