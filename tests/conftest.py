"""Shared fixtures. Add fixtures below; keep each one small and fast."""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixtures that train a model: a test that uses one is slow (`pytest -m "not slow"` skips it).
TRAINING_FIXTURES = {"tiny_onnx"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MVTec-style washer folder (64 px): train/good, test/good, test/<defect>."""
    from anomaly.synthetic.demo import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("tiny_data"), n_train=8, n_test_good=2, n_per_defect=1, size=64)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """An exported pixel-autoencoder model (64 px, 1 epoch) trained on `tiny_dataset`; needs torch."""
    torch = pytest.importorskip("torch")
    from anomaly.config import ModelConfig, TrainConfig
    from anomaly.training.detector import Detector
    from anomaly.training.export import export_onnx

    threads = torch.get_num_threads()  # training with threads=1 sets it process-wide: put it back
    try:
        det = Detector(ModelConfig(kind="ae", image_size=64), TrainConfig(epochs=1, batch_size=8, threads=1))
        det.fit(tiny_dataset, progress=False)
    finally:
        torch.set_num_threads(threads)
    return export_onnx(det, tmp_path_factory.mktemp("tiny_model") / "tiny.onnx")
