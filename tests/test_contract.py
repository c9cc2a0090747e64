"""The ONNX contract: sealed files, refused foreign graphs, and a document that names every key."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from anomaly.contract import FORMAT, FORMAT_KEY, OPTIONAL_KEYS, REQUIRED_KEYS, SEAL_KEY, seal_file
from anomaly.errors import ModelFileError
from anomaly.inspection.inspector import Inspector

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "default.onnx"
onnx = pytest.importorskip("onnx")


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _tiny_graph(outputs: tuple[str, ...], metadata: dict[str, str], path: Path) -> Path:
    """A graph that is not ours: image -> a constant map (and its maximum)."""
    from onnx import TensorProto, helper

    size = int(metadata["input_size"])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["anomaly_map"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", ["anomaly_map"], ["image_score"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
    )
    if outputs == ("anomaly_map",):
        graph.node.pop()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(path))
    return path


def test_bundled_model_is_sealed_and_names_no_machine_path():
    inspector = Inspector(BUNDLED)
    meta = inspector.info.metadata
    assert meta[FORMAT_KEY] == FORMAT
    assert len(inspector.info.digest) == 64
    assert "/" not in meta["train_data"] and "\\" not in meta["train_data"]
    assert all(key in meta for key in REQUIRED_KEYS)


def test_a_changed_byte_breaks_the_seal(tmp_path):
    data = bytearray(BUNDLED.read_bytes())
    data[len(data) // 2] ^= 0x01  # somewhere in the weights
    changed = tmp_path / "changed.onnx"
    changed.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="changed after export"):
        Inspector(changed)


def test_foreign_graph_with_copied_metadata_is_refused(tmp_path):
    foreign = _tiny_graph(("anomaly_map", "image_score"), _metadata(BUNDLED), tmp_path / "foreign.onnx")
    with pytest.raises(ModelFileError, match="changed after export"):
        Inspector(foreign)


def test_unsealed_file_is_refused(tmp_path):
    meta = {k: v for k, v in _metadata(BUNDLED).items() if k != SEAL_KEY}
    unsealed = _tiny_graph(("anomaly_map", "image_score"), meta, tmp_path / "unsealed.onnx")
    with pytest.raises(ModelFileError, match="no seal"):
        Inspector(unsealed)


def test_sealed_file_with_one_output_is_refused_at_load(tmp_path):
    meta = _metadata(BUNDLED)
    meta[SEAL_KEY] = "0" * 64
    one_output = _tiny_graph(("anomaly_map",), meta, tmp_path / "one.onnx")
    seal_file(one_output)
    with pytest.raises(ModelFileError, match="outputs"):
        Inspector(one_output)


def test_resealed_copy_still_scores(tmp_path):
    """Sealing is deterministic: re-sealing an intact file changes nothing."""
    copy = tmp_path / "copy.onnx"
    shutil.copy(BUNDLED, copy)
    assert seal_file(copy) == Inspector(BUNDLED).info.digest
    assert copy.read_bytes() == BUNDLED.read_bytes()
    score = Inspector(copy).inspect(np.full((64, 64, 3), 0.5, np.float32)).score
    assert np.isfinite(score)


def test_integration_document_names_every_key():
    text = (ROOT / "docs" / "onnx.md").read_text()
    missing = [key for key in (FORMAT_KEY, FORMAT, SEAL_KEY, *REQUIRED_KEYS, *OPTIONAL_KEYS) if f"`{key}`" not in text]
    assert not missing, f"docs/onnx.md does not describe {missing}"
