"""Reading images into the one internal form, and writing them.

The one internal form every part of the project uses: a float32 array of shape
(H, W, 3), RGB channel order, values in [0, 1]. Grayscale is replicated to three
channels, alpha is dropped (composited on black), 16-bit images are scaled by
1/65535 and 8-bit by 1/255. This module imports no torch: training, the ONNX
runtime and the UI all read images here and prepare them for the model in
`anomaly.inspection.layout`, so a model sees at run time exactly what it saw in training.

Limits (docs/limits.md): an image has at least MIN_SIDE pixels on each side and at most
MAX_IMAGE_PIXELS pixels, and a tiled image at most MAX_VIEWS tiles; anything else is
refused with ImageReadError naming the image, so one hostile file costs one ERROR row.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Smaller images carry too little for the model's receptive field to mean anything.
MIN_SIDE = 8
# The largest image read: 50 megapixels covers every industrial camera sensor, and keeps
# one image's internal form (12 bytes a pixel) within a few hundred megabytes.
MAX_IMAGE_PIXELS = 50_000_000
# Files are read whole before decoding: the largest image uncompressed (16-bit RGBA)
# fits well below this.
MAX_FILE_BYTES = 1 << 29


class ImageReadError(ValueError):
    """An image (a file, encoded bytes or an array) that cannot be inspected: not
    decodable, of an unsupported type or shape, or outside the limits. The message names
    the image and says what is accepted."""


def check_size(height: int, width: int, name: str) -> None:
    """The one size rule for files and arrays: MIN_SIDE..., at most MAX_IMAGE_PIXELS."""
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ImageReadError(f"{name}: image is too small ({width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE})")
    if height * width > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            f"{name}: image is too large ({width}x{height} pixels; at most "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels, see docs/limits.md)"
        )


ACCEPTED_ARRAYS = (
    "an array of shape (H, W) gray, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, channels last, "
    "of dtype uint8 (0-255), uint16 (0-65535) or float32/float64 (0-1)"
)
_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


def _check_array(raw: object, name: str) -> np.ndarray:
    """The array checks for files and API callers alike: a clear ImageReadError naming
    the accepted forms instead of an error from deep inside numpy or OpenCV."""
    if not isinstance(raw, np.ndarray):
        hint = " (cv2.imread returns None for a file it cannot read)" if raw is None else ""
        raise ImageReadError(
            f"{name}: not an image array but {type(raw).__name__}{hint}; expected {ACCEPTED_ARRAYS}, "
            "or a path to an image file"
        )
    if raw.dtype not in _DTYPES:
        raise ImageReadError(f"{name}: unsupported pixel type {raw.dtype}; expected {ACCEPTED_ARRAYS}")
    if raw.ndim not in (2, 3) or (raw.ndim == 3 and raw.shape[2] not in (1, 3, 4)):
        raise ImageReadError(f"{name}: unsupported array shape {raw.shape}; expected {ACCEPTED_ARRAYS}")
    check_size(raw.shape[0], raw.shape[1], name)
    if raw.dtype.kind == "f" and not (np.isfinite(raw.min()) and np.isfinite(raw.max())):
        # a NaN score compares false with every threshold: it would PASS
        raise ImageReadError(f"{name}: the image holds NaN or infinite values")
    return raw


def _to_internal(raw: object, name: str, bgr: bool) -> np.ndarray:
    """Convert a decoded file (bgr: BGR/BGRA/gray, as OpenCV decodes) or an API array
    (RGB/RGBA/gray) of 8/16-bit or float pixels to RGB float [0, 1]."""
    raw = _check_array(raw, name)
    if raw.dtype in (np.uint8, np.uint16) and (raw.ndim == 2 or raw.shape[2] in (1, 3)):
        # The common case, done in the integer domain first (one float pass, not four):
        # batch scoring decodes every image on the same cores that run the model.
        gray = raw.ndim == 2 or raw.shape[2] == 1
        rgb = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB) if gray else cv2.cvtColor(raw, cv2.COLOR_BGR2RGB) if bgr else raw
        # one pass that converts as it scales (bit for bit what astype then *= gives, in
        # half the time on large photos)
        return np.multiply(rgb, np.float32(1.0 / (255.0 if raw.dtype == np.uint8 else 65535.0)), dtype=np.float32)
    # the same float32 product as the fast path above (a division differs in the last bit)
    if raw.dtype == np.uint8:
        img = raw.astype(np.float32) * np.float32(1.0 / 255.0)
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) * np.float32(1.0 / 65535.0)
    elif (
        raw.dtype == np.float32
        and raw.ndim == 3
        and raw.shape[2] == 3
        and not bgr
        and raw.min() >= 0
        and raw.max() <= 1
    ):
        return raw  # already the internal form: no copy of a large image
    else:
        img = np.clip(raw.astype(np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 3:
        img = img[:, :, ::-1] if bgr else img
    else:  # 4: alpha composited on black
        alpha = img[:, :, 3:4]
        img = (img[:, :, 2::-1] if bgr else img[:, :, :3]) * alpha
    return np.ascontiguousarray(img, dtype=np.float32)


def to_internal(image: object, name: str = "<array>") -> np.ndarray:
    """An image array given by an API caller in the internal form (RGB float32 [0, 1]).

    Accepted: shape (H, W) gray, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA (alpha
    composited on black), channels last; dtype uint8 (scaled by 1/255), uint16 (by
    1/65535) or float32/float64 in [0, 1] (clipped to it; NaN or infinity refused). Each
    side at least MIN_SIDE pixels, at most MAX_IMAGE_PIXELS pixels: the rule files obey.
    Channel order is RGB: `cv2.imread` gives BGR, so convert it (cv2.COLOR_BGR2RGB) or
    pass the path instead. Anything else raises ImageReadError naming the accepted forms.
    """
    return _to_internal(image, name, bgr=False)


def _tiff_info(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, pages) from a classic TIFF's header and IFD chain, or None."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8 or int.from_bytes(data[2:4], "little" if order == "<" else "big") != 42:
        return None
    endian: Literal["little", "big"] = "little" if order == "<" else "big"
    offset = int.from_bytes(data[4:8], endian)
    size: dict[int, int] = {}
    pages, seen = 0, set()
    while 0 < offset < len(data) - 2 and offset not in seen and pages < 10_000:  # a looped chain ends here
        seen.add(offset)
        count = int.from_bytes(data[offset : offset + 2], endian)
        for k in range(count if pages == 0 else 0):
            entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
            if len(entry) == 12 and int.from_bytes(entry[0:2], endian) in (256, 257):
                kind = int.from_bytes(entry[2:4], endian)
                value = entry[8:10] if kind == 3 else entry[8:12]
                size[int.from_bytes(entry[0:2], endian)] = int.from_bytes(value, endian)
        pages += 1
        offset = int.from_bytes(data[offset + 2 + 12 * count : offset + 6 + 12 * count], endian)
    return (size[256], size[257], pages) if 256 in size and 257 in size else None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOFn), or None."""
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:  # no length field
            i += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def header_info(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, pages) that a PNG, JPEG, BMP or TIFF header declares, read before
    decoding so a small file declaring a huge image is refused without allocating it;
    None for other formats (OpenCV's own pixel limit then applies while decoding)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), 1
    if data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
        return None if size is None else (*size, 1)
    if data[:2] == b"BM" and len(data) >= 26:
        return (
            abs(int.from_bytes(data[18:22], "little", signed=True)),
            abs(int.from_bytes(data[22:26], "little", signed=True)),
            1,
        )
    return _tiff_info(data)


def check_header(data: bytes, name: str) -> None:
    """Refuse, before decoding, an image outside the size limits or with several pages:
    only the first page would be decoded, and the others must not pass uninspected."""
    info = header_info(data)
    if info is None:
        return
    width, height, pages = info
    if pages > 1:
        raise ImageReadError(
            f"{name}: a TIFF with {pages} pages; only single-page images are inspected (split the pages into files)"
        )
    if width > 0 and height > 0:  # a zero is a header OpenCV will refuse on its own
        check_size(height, width, name)


def check_complete(data: bytes, name: str) -> None:
    """Refuse a PNG or JPEG cut short: OpenCV decodes what is there and fills the rest
    with grey, so the missing part of the picture would be judged without being seen."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        raise ImageReadError(f"{name}: truncated PNG file ({len(data)} bytes; the end of the image is missing)")
    # the last scan of a whole JPEG is followed by its end marker (0xFFD9 cannot occur
    # inside a scan's coded data)
    if data[:3] == b"\xff\xd8\xff" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageReadError(f"{name}: truncated JPEG file ({len(data)} bytes; the end of the image is missing)")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (e.g. an upload) into the internal form."""
    check_header(data, name)
    check_complete(data, name)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    except cv2.error:  # e.g. past OpenCV's own pixel limit, for formats without a header check
        raw = None
    if raw is None:
        raise ImageReadError(f"{name}: not a readable image (corrupt or unsupported format)")
    return _to_internal(raw, name, bgr=True)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into the internal form, or raise ImageReadError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: {_why_not_a_file(path)}")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageReadError(f"{path}: file is too large ({path.stat().st_size} bytes; at most {MAX_FILE_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode_image(data, str(path))


def _why_not_a_file(path: Path) -> str:
    """Why a listed path cannot be read as a file, in words: a broken or looping
    symbolic link is named as such, so its ERROR row tells what to fix."""
    if not path.is_symlink():
        return (
            "no such file"
            if not path.exists()
            else "a folder, not an image file"
            if path.is_dir()
            else "not a regular file"
        )
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return "symbolic link loop"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    return "symbolic link to something that is not a regular file"


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W); any non-zero pixel is defect."""
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        raise ImageReadError(f"{path}: not a readable mask image")
    if raw.shape != shape:
        raw = cv2.resize(raw, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return raw > 0


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files below a folder, sorted, by extension (case-insensitive). A symbolic
    link named like an image is listed even when broken or looping, so that it becomes
    an ERROR row rather than vanish."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or p.is_symlink())
    )


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Internal float image to 8-bit RGB, for display and overlays."""
    # one saturating, rounding OpenCV pass (the internal form is never negative)
    src = np.ascontiguousarray(image)
    return cv2.convertScaleAbs(np.maximum(src, 0.0) if src.min() < 0 else src, alpha=255.0)


def save_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB (float [0,1] or uint8) or single-channel image; format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(rgb) if rgb.dtype != np.uint8 else rgb
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"{path}: could not write image")
