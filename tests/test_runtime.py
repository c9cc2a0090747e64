"""The torch-free runtime: thresholds per call, regions, thread safety, bad files."""

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from anomaly.errors import ModelFileError
from anomaly.inspection.imageio import list_images, read_image
from anomaly.inspection.inspector import Inspector
from anomaly.inspection.regions import defect_mask, find_regions, mask_and_regions


def test_hysteresis_regions_need_a_strong_pixel():
    heat = np.zeros((40, 40), np.float32)
    heat[5:10, 5:10] = 0.6  # weak blob: above pixel threshold only
    heat[20:30, 20:30] = 0.6  # blob with a strong peak
    heat[25, 25] = 1.5
    mask = defect_mask(heat, image_threshold=1.0, pixel_threshold=0.5)
    assert not mask[5:10, 5:10].any() and mask[20:30, 20:30].all()
    (region,) = find_regions(heat, mask)
    assert (region.x, region.y, region.width, region.height, region.area) == (20, 20, 10, 10, 100)
    assert region.peak == pytest.approx(1.5)
    assert not defect_mask(heat, 2.0, 0.5).any()  # nothing reaches the image threshold: no regions


def test_one_pass_mask_and_regions_match_the_two_step_result():
    rng = np.random.default_rng(3)
    heat = cv2.GaussianBlur(rng.normal(0, 1, (120, 90)).astype(np.float32), (0, 0), 3) * 6
    for it, pt in [(1.0, 0.5), (0.8, 0.8), (5.0, 0.5), (float(heat.max()), -9.0)]:
        mask, regions = mask_and_regions(heat, it, pt)
        assert mask.dtype == bool and (mask == defect_mask(heat, it, pt)).all()
        assert regions == find_regions(heat, mask)
        assert sum(r.area for r in regions) == int(mask.sum())
    # a mix of kept and dropped blobs, and a case where every blob is kept
    assert 0 < len(mask_and_regions(heat, 1.0, 0.5)[1]) < cv2.connectedComponents((heat >= 0.5).astype(np.uint8))[0] - 1
    assert len(mask_and_regions(heat, float(heat.max()), -9.0)[1]) == 1


def test_inspect_any_size_and_override_thresholds(tiny_onnx, tiny_dataset):
    inspector = Inspector(tiny_onnx)
    img = read_image(list_images(tiny_dataset / "test")[0])
    big = np.ascontiguousarray(np.repeat(np.repeat(img, 3, axis=0), 2, axis=1))  # 192 x 128, not square
    res = inspector.inspect(big)
    assert res.heatmap.shape == big.shape[:2] and res.mask.shape == big.shape[:2]
    assert res.image_threshold == inspector.image_threshold
    low = inspector.inspect(big, image_threshold=res.score - 1e-3)
    high = inspector.inspect(big, image_threshold=res.score + 1e-3)
    assert low.verdict == "FAIL" and high.verdict == "PASS" and low.regions and not high.regions
    again = res.with_thresholds(image_threshold=res.score - 1e-3)
    assert again.verdict == "FAIL" and np.array_equal(again.mask, low.mask)
    assert res.overlay(big).shape == big.shape and res.overlay(big).dtype == np.uint8


def test_one_session_is_safe_across_threads(tiny_onnx, tiny_dataset):
    inspector = Inspector(tiny_onnx, threads=1)
    images = [read_image(p) for p in list_images(tiny_dataset / "test")]
    expected = [inspector.inspect(img).score for img in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda im: inspector.inspect(im).score, images * 4))
    assert np.allclose(got, expected * 4, atol=1e-6)


def test_bad_model_files_are_named(tmp_path):
    with pytest.raises(ModelFileError, match="missing.onnx: no such model file"):
        Inspector(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not onnx")
    with pytest.raises(ModelFileError, match="junk.onnx: not a loadable ONNX model"):
        Inspector(junk)


def test_foreign_onnx_without_metadata_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelFileError, match="foreign.onnx: not an anomaly inspection model"):
        Inspector(path)
