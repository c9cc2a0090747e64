"""Train a tiny model on generated parts, find obvious defects, save, load, export, compare.

One trained model per feature family (module-scoped: the feature autoencoder and the
patch memory) serves every test here, so the whole file stays around a minute on two
cores.
"""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anomaly.cli import main
from anomaly.config import ModelConfig, TrainConfig
from anomaly.errors import ModelFileError
from anomaly.evaluation import metrics, pixel_metrics
from anomaly.evaluation.datasets import find_test_set, load_mask
from anomaly.inspection.imageio import read_image, save_image
from anomaly.synthetic.defects import DEFECTS
from anomaly.synthetic.demo import generate_dataset
from anomaly.training.detector import Detector

pytestmark = pytest.mark.slow  # trains models

SIZE = 128


OBVIOUS = ("stain", "missing_material", "perlin_foreign_texture")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Generated washers; the test split gets obvious defects (large stains, missing
    material, foreign texture) painted on fresh good parts, with exact masks."""
    root = tmp_path_factory.mktemp("data")
    folder = generate_dataset(root, seed=1, category="washer", size=SIZE, n_train=24, n_test_good=12, n_per_defect=1)
    for d in (folder / "test").iterdir():
        if d.name != "good":
            shutil.rmtree(d)
    shutil.rmtree(folder / "ground_truth")
    rng = np.random.default_rng(0)
    for i, path in enumerate(sorted((folder / "test" / "good").glob("*.png"))[6:]):
        kind = OBVIOUS[i % len(OBVIOUS)]
        img = read_image(path)
        bad, mask = DEFECTS[kind](img, rng, scale=0.2, region=img.mean(axis=2) > 0.25)
        save_image(folder / "test" / kind / path.name, bad)
        save_image(folder / "ground_truth" / kind / f"{path.stem}_mask.png", mask.astype(np.uint8) * 255)
        path.unlink()
    return folder


@pytest.fixture(scope="module", params=["feature_ae", "patch_memory+no-edge"])
def trained(dataset, tmp_path_factory, request):
    """The default family (with its edge calibration), and the memory without edge
    calibration (so a model with and one without the edge buffers go through training,
    saving, export and the parity checks)."""
    torch.set_num_threads(2)
    kind, _, extra = request.param.partition("+")
    cfg = ModelConfig(kind=kind, image_size=SIZE, edge_calibration=extra != "no-edge")
    assert cfg.edge_calibration == (kind == "feature_ae")
    det = Detector(cfg, TrainConfig(epochs=15, batch_size=8, seed=0, patience=15))
    det.fit(dataset, progress=False)
    folder = det.save(tmp_path_factory.mktemp("model") / "m")
    return det, folder


def _test_data(dataset):
    samples = find_test_set(dataset)
    images = [read_image(s.path) for s in samples]
    labels = np.array([s.is_defective for s in samples])
    masks = [load_mask(s, img.shape[:2]) for s, img in zip(samples, images)]
    return samples, images, labels, masks


def test_finds_obvious_defects(trained, dataset):
    det, _ = trained
    _, images, labels, masks = _test_data(dataset)
    maps, scores = det.score(images)
    assert metrics.roc_auc(labels, scores) >= 0.9
    assert pixel_metrics.pixel_auroc(masks, maps) >= 0.9
    assert det.summary["train_count"] + det.summary["holdout_count"] == 24


def test_calibration_puts_good_parts_below_threshold(trained, dataset):
    det, _ = trained
    samples, images, labels, _ = _test_data(dataset)
    _, scores = det.score([img for img, lab in zip(images, labels) if not lab])
    assert (scores < det.image_threshold).mean() >= 0.8
    assert 0 < det.pixel_threshold <= det.image_threshold == 1.0


def test_save_load_round_trip_gives_identical_scores(trained, dataset):
    det, folder = trained
    _, images, _, _ = _test_data(dataset)
    again = Detector.load(folder)
    assert np.allclose(det.score(images[:4])[1], again.score(images[:4])[1], atol=1e-6)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model"]["kind"] == det.model_config.kind and saved["calibration"]["image_threshold"] == 1.0
    assert not any(
        k.startswith("features.")
        for k in __import__("safetensors.torch").torch.load_file(str(folder / "model.safetensors"))
    )


def test_seed_makes_training_reproducible(dataset):
    cfg = ModelConfig(kind="ae", image_size=64, base_channels=8, latent_channels=4)
    runs = [Detector(cfg, TrainConfig(epochs=1, batch_size=8, seed=5)).fit(dataset, progress=False) for _ in range(2)]
    a, b = (r.module.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_parity_on_real_images(trained, dataset, tmp_path):
    from anomaly.inspection.inspector import Inspector
    from anomaly.training.export import export_onnx
    from anomaly.training.parity import check_parity

    det, _ = trained
    path = export_onnx(det, tmp_path / "m.onnx")
    _, images, labels, _ = _test_data(dataset)
    diff, same = check_parity(det, path, images)
    assert diff <= 1e-4 and same
    inspector = Inspector(path)
    onnx_scores = inspector.score(images)[1]
    torch_scores = det.score(images)[1]
    assert np.array_equal(onnx_scores >= 1.0, torch_scores >= 1.0)
    meta = inspector.info.metadata
    for key in (
        "input_size",
        "channel_order",
        "value_range",
        "image_threshold",
        "pixel_threshold",
        "model_kind",
        "train_count",
        "project_version",
        "created",
    ):
        assert meta[key], key
    assert meta["channel_order"] == "RGB" and int(meta["input_size"]) == SIZE
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert not list(tmp_path.glob("*.data"))  # one file, no external data


def test_export_refuses_uncalibrated_model(tmp_path):
    from anomaly.training.export import export_onnx

    with pytest.raises(ModelFileError, match="not trained and calibrated"):
        export_onnx(Detector(ModelConfig(kind="ae", image_size=64, base_channels=8)), tmp_path / "x.onnx")


def test_evaluate_cli_folder_and_onnx_agree(trained, dataset, tmp_path):
    _, folder = trained
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(folder), "--out", str(onnx_path)]) == 0
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    assert (
        main(
            ["evaluate", str(folder), str(dataset), "--json", str(out_a), "--report", str(tmp_path / "rep"), "--quiet"]
        )
        == 0
    )
    assert main(["evaluate", str(onnx_path), str(dataset), "--json", str(out_b), "--quiet"]) == 0
    a, b = json.loads(out_a.read_text()), json.loads(out_b.read_text())
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1"):
        assert abs(a[key] - b[key]) <= 1e-3, key
    assert set(a["per_defect"]) == set(OBVIOUS)
    assert (tmp_path / "rep" / "roc.png").is_file() and len(list((tmp_path / "rep").glob("*.png"))) >= 5


def test_synthetic_defects_give_f1_thresholds(trained, tmp_path):
    det, folder = trained
    cal = det.calibration
    assert cal.f1_source == "synthetic" and "scratch" in cal.synthetic_defects["kinds"]
    assert 0 < cal.image_threshold_f1 < 10 and 0 < cal.pixel_threshold_f1 < 10
    saved = json.loads((folder / "config.json").read_text())["calibration"]
    assert saved["image_threshold_f1"] == pytest.approx(cal.image_threshold_f1)
    import onnx

    from anomaly.training.export import export_onnx

    model = onnx.load(str(export_onnx(det, tmp_path / "m.onnx")), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["f1_source"] == "synthetic" and float(meta["image_threshold_f1"]) == pytest.approx(
        cal.image_threshold_f1
    )
