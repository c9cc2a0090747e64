"""Image reading covers every format and bit depth the issue lists, in one internal form."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.imageio import (
    ImageReadError,
    crop_to_content,
    decode_image,
    fit_to_square,
    list_images,
    map_to_original,
    read_image,
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
