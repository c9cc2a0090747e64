"""INT8 export (anomaly.training.quantize) and the OpenVINO backend of Inspector."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from anomaly.errors import ModelFileError
from anomaly.inspection.inspector import Inspector

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "default.onnx"


@pytest.fixture(scope="module")
def tiny_feature_model(tiny_dataset: Path):
    """The default model family at 64 px, one epoch, a small memory: trained on tiny_dataset."""
    torch = pytest.importorskip("torch")
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector

    threads = torch.get_num_threads()
    try:
        det = Detector(
            ModelConfig(image_size=64, memory_size=128), TrainConfig(epochs=1, head_epochs=1, batch_size=8, threads=1)
        )
        det.fit(tiny_dataset, progress=False)
    finally:
        torch.set_num_threads(threads)
    return det


@pytest.mark.slow
def test_int8_export_is_sealed_recalibrated_and_agrees(
    tiny_feature_model, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    from anomaly.evaluation.datasets import find_test_set
    from anomaly.inspection.imageio import read_image
    from anomaly.training import quantize
    from anomaly.training.export import export_onnx
    from anomaly.training.quantize import export_int8

    det = tiny_feature_model
    ranged: list[np.ndarray] = []  # the views whose activations set the int8 ranges
    real_reader = quantize._Reader

    def reader(views, input_name):
        ranged.extend(views)
        return real_reader(views, input_name)

    monkeypatch.setattr(quantize, "_Reader", reader)
    report = export_int8(det, tmp_path / "int8.onnx", tiny_dataset)
    # each chosen training image, then a copy of it with one painted defect: the same
    # picture except where the defect went
    good, painted = ranged[: len(ranged) // 2], ranged[len(ranged) // 2 :]
    assert len(good) == len(painted) == report.calibration_images
    changed = [np.mean(np.any(g != p, axis=2)) for g, p in zip(good, painted)]
    assert all(0.0 < c < 0.5 for c in changed), changed
    fp32 = Inspector(export_onnx(det, tmp_path / "fp32.onnx"))
    int8 = Inspector(report.path)  # loads: the seal matches the quantised graph
    assert "int8" in int8.info.metadata["quantization"]
    assert int8.image_threshold == 1.0 and 0.0 < int8.pixel_threshold <= 1.0
    assert int8.pixel_threshold == pytest.approx(report.int8.pixel_threshold)
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert report.verdicts_agree >= 0.75
    images = [read_image(s.path) for s in find_test_set(tiny_dataset)]
    _, s32 = fp32.score(images)
    _, s8 = int8.score(images)
    assert np.mean((s32 >= 1.0) == (s8 >= 1.0)) >= 0.75


@pytest.mark.slow
def test_refit_on_the_float_graph_reproduces_training_calibration(
    tiny_feature_model, tiny_dataset: Path, tmp_path: Path
) -> None:
    """The re-fit is training's calibration, only on another graph's raw maps: on the float
    graph it must give back the trained constants."""
    import onnx

    from anomaly.training.export import export_onnx
    from anomaly.training.quantize import _views, refit_calibration, split_like_training

    det = tiny_feature_model
    model = onnx.load(str(export_onnx(det, tmp_path / "fp32.onnx")))
    _, hold = split_like_training(det, tiny_dataset)
    cal = refit_calibration(model, det, *_views(det, hold))
    trained = det.calibration
    assert cal.map_center == pytest.approx(trained.map_center, rel=1e-4)
    assert cal.map_scale == pytest.approx(trained.map_scale, rel=1e-4)
    assert cal.pixel_threshold == pytest.approx(trained.pixel_threshold, abs=1e-3)


def test_int8_export_names_the_missing_calibration_folder(capsys) -> None:
    pytest.importorskip("torch")
    from anomaly.cli import main

    assert main(["export", str(ROOT / "models" / "default"), "--out", "/nonexistent/x.onnx", "--int8"]) == 2
    err = capsys.readouterr().err
    assert "--calibration-images" in err and "'washer'" in err


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="openvino"):
        Inspector(BUNDLED, backend="tensorrt")  # type: ignore[arg-type]


def test_openvino_missing_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"anomaly\[openvino\]"):
        Inspector(BUNDLED, backend="openvino")


def test_openvino_backend_gives_the_same_maps() -> None:
    pytest.importorskip("openvino")
    x = np.random.default_rng(0).random((2, 3, 256, 256), dtype=np.float32)
    maps, scores = Inspector(BUNDLED).run(x)
    ov_maps, ov_scores = Inspector(BUNDLED, backend="openvino", threads=1).run(x)
    assert np.abs(maps - ov_maps).max() < 1e-3 and np.allclose(scores, ov_scores, atol=1e-3)


def test_seal_still_guards_a_changed_file(tmp_path: Path) -> None:
    data = bytearray(BUNDLED.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "x.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        Inspector(tmp_path / "x.onnx", backend="openvino")
