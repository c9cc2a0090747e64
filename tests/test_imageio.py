"""Image reading covers every format and bit depth the issue lists, in one internal form."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.inspection.imageio import ImageReadError, decode_image, list_images, read_image
from anomaly.inspection.layout import (
    Placement,
    Tiling,
    crop_to_content,
    fit_to_square,
    limit_detail,
    map_to_original,
    per_image,
    prepare,
    to_batch,
)


def _write(path: Path, arr: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), arr)
    return path


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_rgb8_all_formats_read_as_rgb_float(tmp_path, ext):
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in BGR
    img = read_image(_write(tmp_path / f"a{ext}", bgr))
    assert img.dtype == np.float32 and img.shape == (20, 30, 3)
    assert abs(img[..., 0].mean() - 200 / 255) < 0.03  # red first: RGB order
    assert img[..., 2].mean() < 0.03


def test_gray16_scaled_and_replicated(tmp_path):
    arr = np.full((16, 16), 65535 // 2, np.uint16)
    img = read_image(_write(tmp_path / "g.png", arr))
    assert img.shape == (16, 16, 3)
    assert np.allclose(img, 0.5, atol=1e-4)
    tif = read_image(_write(tmp_path / "g.tif", arr))
    assert np.allclose(tif, img)


def test_rgba_alpha_composited_on_black(tmp_path):
    bgra = np.zeros((10, 10, 4), np.uint8)
    bgra[..., :3] = 255
    bgra[:5, :, 3] = 255  # top opaque, bottom transparent
    img = read_image(_write(tmp_path / "a.png", bgra))
    assert np.allclose(img[:5], 1.0) and np.allclose(img[5:], 0.0)


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="nope.png: no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="upload.jpg"):
        decode_image(b"", "upload.jpg")


def test_list_images_recursive_sorted_case_insensitive(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.PNG", "a.jpg", "sub/c.tiff", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "sub/c.tiff"]


def test_letterbox_keeps_aspect_and_maps_back():
    img = np.zeros((100, 300, 3), np.float32)
    img[40:60, 140:160] = 1.0  # a bright square in the middle
    fitted, pl = fit_to_square(img, 96, "letterbox")
    assert fitted.shape == (96, 96, 3)
    assert (pl.content_h, pl.content_w) == (32, 96) and pl.top == 32
    content = crop_to_content(fitted[..., 0], pl)
    assert content.shape == (32, 96)
    back = map_to_original(fitted[..., 0], pl)
    assert back.shape == (100, 300)
    assert back[50, 150] > 0.8 and back[5, 5] < 0.05


def test_stretch_and_batch_layout():
    imgs = [np.random.default_rng(0).random((50, 80, 3), dtype=np.float32) for _ in range(3)]
    batch, pls = to_batch(imgs, 64, "stretch")
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == np.float32
    assert all((p.top, p.left, p.content_h, p.content_w) == (0, 0, 64, 64) for p in pls)


@pytest.mark.parametrize("h, w, tiles", [(100, 420, 1), (64, 64, 2), (300, 500, 2), (77, 1000, 1)])
def test_tiles_cover_the_frame_within_bounds(h, w, tiles):
    t = Tiling.of(h, w, 64, tiles)
    assert min(t.frame_h, t.frame_w) == tiles * 64  # the short side spans `tiles` tiles
    covered = np.zeros((t.frame_h, t.frame_w), int)
    for y, x in t.origins:
        assert 0 <= y <= t.frame_h - 64 and 0 <= x <= t.frame_w - 64
        covered[y : y + 64, x : x + 64] += 1
    assert covered.min() >= 1
    # evenly spread: no tile further than a tile from its neighbour, no more tiles than needed
    assert t.views == -(-t.frame_h // 64) * -(-t.frame_w // 64)


def test_tile_maps_blend_back_to_the_image():
    """Each tile's own pixels as its 'map': blending them must give back the frame
    exactly, whatever the overlaps and weights; and the map reaches original size."""
    rng = np.random.default_rng(0)
    img = rng.random((90, 400, 3), dtype=np.float32)
    squares, layout = prepare(img, 64, "auto")
    assert isinstance(layout, Tiling) and layout.views == len(squares) == 5
    frame = cv2.resize(img, (layout.frame_w, layout.frame_h), interpolation=cv2.INTER_AREA)[:, :, 1]
    content = layout.content([s[:, :, 1] for s in squares])
    np.testing.assert_allclose(content, frame, atol=1e-5)
    assert layout.to_original([s[:, :, 1] for s in squares]).shape == (90, 400)


def test_blend_trusts_tile_centres_over_borders():
    layout = Tiling.of(64, 100, 64, 1)  # two tiles overlapping on 28 columns
    left, right = np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32)
    blended = layout.content([left, right])[32]
    assert blended[37] < 0.3 and blended[62] > 0.7  # overlap starts at 36: near each tile's centre it wins
    assert np.all(np.diff(blended) >= -1e-6)


def test_auto_mode_letterboxes_near_squares_and_tiles_strips():
    near_square, strip = np.zeros((100, 190, 3), np.float32), np.zeros((100, 200, 3), np.float32)
    assert isinstance(prepare(near_square, 64, "auto")[1], Placement)
    assert isinstance(prepare(strip, 64, "auto")[1], Tiling)
    assert prepare(near_square, 64, "auto", tiles=2)[1].views == 2 * 4
    assert isinstance(prepare(strip, 64, "letterbox")[1], Placement)
    batch, layouts = to_batch([near_square, strip], 64, "auto")
    assert batch.shape[0] == 1 + 2 and [lay.views for lay in layouts] == [1, 2]
    maps = list(batch[:, 0])
    assert [len(m) for m in per_image(maps, layouts)] == [1, 2]
    with pytest.raises(ValueError):
        per_image(maps[:-1], layouts)


def test_working_shape_is_the_grid_the_model_sees():
    from anomaly.inspection.layout import working_shape

    img = np.zeros((300, 500, 3), np.float32)
    _, placement = prepare(img, 64, "letterbox")
    assert working_shape(300, 500, 64) == (placement.content_h, placement.content_w) == (38, 64)
    _, tiling = prepare(img, 64, "auto", tiles=2)
    assert working_shape(300, 500, 64, "auto", tiles=2) == (tiling.frame_h, tiling.frame_w) == (128, 213)


def test_limit_detail_shrinks_only_images_far_above_the_working_grid() -> None:
    coarse = np.random.default_rng(0).random((40, 48, 3)).astype(np.float32)
    photo = np.clip(cv2.resize(coarse, (2448, 2048), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    small = limit_detail(photo, 256)  # the model sees it as 214 x 256: keep at most 4x that
    assert small.shape == (857, 1024, 3) and small.dtype == np.float32
    assert abs(float(small.mean()) - float(photo.mean())) < 1e-3, "area averaging keeps the brightness"
    prepared, _ = prepare(photo, 256)
    from_small, _ = prepare(small, 256)
    assert np.abs(prepared[0] - from_small[0]).max() < 0.01, "the model's view barely changes"
    bottle = np.zeros((900, 900, 3), np.float32)
    assert limit_detail(bottle, 256) is bottle  # 3.5x the grid: kept as it is
    strip = np.zeros((1000, 8000, 3), np.float32)  # tiled: the frame is 256 x 2048, so 4x is 8192 wide
    assert limit_detail(strip, 256, "auto") is strip
