"""How much image work a scoring run holds at once: a budget in pixels.

Decoding an image and finishing its row (heatmap at full size, regions, overlay) each
take many bytes per pixel for a moment, so the memory of a run grows with the pixels of
the images it has begun and not yet finished, not with their count. Both engines
therefore plan their work by pixels as well as by `--batch-size`:

- `plan_chunks`: consecutive images for one model run (the rows appended together) are
  at most ``batch_size`` images **and** at most IN_FLIGHT_PIXELS pixels, always at least
  one image. Both engines form the very same chunks, from the sizes the files' headers
  declare (`image_pixels`, read before anything is decoded), so they call the model on
  the same groups of images; a Ray worker holds one chunk at a time.
- `PixelBudget`: the local engine begins decoding an image only while the images it
  holds (decoding, waiting for the model, being finished) stay within IN_FLIGHT_PIXELS,
  and gives an image's pixels back as soon as its row is finished. One image is always
  admitted when nothing else is in flight, so a near-limit image never waits forever.

docs/limits.md gives the measured memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from anomaly.inspection.imageio import MAX_IMAGE_PIXELS, header_info
from anomaly.scoring.inputs import InputItem

# The pixels a run (or one Ray worker) holds between beginning to decode images and
# finishing their rows. Memory follows pixels, not image count: this keeps a folder of
# any image size within the 2 GB documented in docs/limits.md, while a chunk of 8 images
# up to 8 MP is never split, and the pipeline keeps its overlap for camera-sized images
# (more would let two images near the limit be in flight at once).
IN_FLIGHT_PIXELS = 64_000_000

# The first bytes of a file hold the size for PNG, BMP and nearly every JPEG.
_PEEK_BYTES = 1 << 16


def image_pixels(path: str | Path) -> int:
    """The pixels an image file declares in its header, read without decoding it.

    0 for a file that cannot be opened (it becomes an ERROR row without being decoded);
    MAX_IMAGE_PIXELS for a file whose header says nothing readable (it may decode to
    anything up to the limit) and for one declaring more (it is refused)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK_BYTES)
            info = header_info(head)
            if info is None and head[:2] in (b"II", b"MM"):  # a TIFF's first directory is often at its end
                size = _tiff_size(f, head)
                info = None if size is None else (*size, 1)
            if info is None and head[:2] == b"\xff\xd8" and len(head) == _PEEK_BYTES:  # long metadata
                info = header_info(head + f.read())
    except OSError:
        return 0
    if info is None or info[0] <= 0 or info[1] <= 0:
        return MAX_IMAGE_PIXELS
    return min(info[0] * info[1], MAX_IMAGE_PIXELS)


def _tiff_size(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """(width, height) from a classic TIFF's first directory, read where it lies."""
    endian: Literal["little", "big"] = "little" if head[:2] == b"II" else "big"
    if len(head) < 8 or int.from_bytes(head[2:4], endian) != 42:
        return None
    f.seek(int.from_bytes(head[4:8], endian))
    count = int.from_bytes(f.read(2), endian)
    entries = f.read(12 * min(count, 4096))
    size = {}
    for k in range(0, len(entries) - 11, 12):
        tag, kind = int.from_bytes(entries[k : k + 2], endian), int.from_bytes(entries[k + 2 : k + 4], endian)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            size[tag] = int.from_bytes(entries[k + 8 : k + 10] if kind == 3 else entries[k + 8 : k + 12], endian)
    return (size[256], size[257]) if len(size) == 2 else None


def plan_chunks(items: Iterable[InputItem], batch_size: int) -> Iterator[list[tuple[InputItem, int]]]:
    """Consecutive images with their declared pixels, for one model run each: at most
    `batch_size` images and at most IN_FLIGHT_PIXELS pixels (one image at least).
    Lazy: a file's header is read when the plan reaches it."""
    chunk: list[tuple[InputItem, int]] = []
    total = 0
    for item in items:
        pixels = image_pixels(item.path)
        if chunk and (len(chunk) == batch_size or total + pixels > IN_FLIGHT_PIXELS):
            yield chunk
            chunk, total = [], 0
        chunk.append((item, pixels))
        total += pixels
    if chunk:
        yield chunk


class PixelBudget:
    """The pixels of the images in flight: `take` before decoding an image, `give`
    once its row is finished. Admits an image while the total stays within `limit`,
    and any one image when nothing is in flight."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = IN_FLIGHT_PIXELS if limit is None else limit
        self.used = 0
        self._changed = threading.Condition()

    def _fits(self, pixels: int) -> bool:
        return self.used == 0 or self.used + pixels <= self.limit

    def try_take(self, pixels: int) -> bool:
        with self._changed:
            if not self._fits(pixels):
                return False
            self.used += pixels
            return True

    def take(self, pixels: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._fits(pixels))
            self.used += pixels

    def give(self, pixels: int) -> None:
        with self._changed:
            self.used -= pixels
            self._changed.notify_all()
