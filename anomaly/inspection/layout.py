"""Fitting images to the model's square working size, and its maps back to the image.

`prepare` makes one letterboxed (or stretched) square of an image, or overlapping square
tiles of a long or large one, and returns the layout that maps the model's output back:
`heatmap_and_score` is the one place that turns a model's maps into an image's heatmap
(at its own resolution) and score. Every size and offset is an integer ratio rounded
halves up (`round_ratio`), so an integrator in any language gets the same pixels
(docs/onnx.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from anomaly.config import FitMode
from anomaly.inspection.imageio import ImageReadError

# "auto" tiles an image once its long side holds two whole squares of its short side:
# from there a letterbox would spend half the model's input on padding and shrink the
# part to half the detail, while tiles cost no overlap.
AUTO_TILE_ASPECT = 2.0
# The most squares one image may be cut into. Each costs a model call's worth of memory
# and time, and a strip with a thousand tiles (a 4000x16 file) would take gigabytes and
# tens of seconds for one row; 32 squares is a 32:1 strip at tiles=1.
MAX_VIEWS = 32


def round_ratio(num: int, den: int) -> int:
    """num / den rounded to the nearest integer, halves up: floor(num / den + 1/2), in
    integers. Every size and offset of the letterbox and tile geometry is one of these, so
    an integrator in any language gets the same pixels (no float product to round, no
    half-to-even versus half-away-from-zero question)."""
    return (2 * num + den) // (2 * den)


@dataclass(frozen=True)
class Placement:
    """Where an original image sits inside the square model input.

    The image was resized to (content_h, content_w) and placed at (top, left)
    in a size x size square; the rest is padding. Needed to map a heatmap back.
    """

    original_h: int
    original_w: int
    size: int
    top: int
    left: int
    content_h: int
    content_w: int

    views = 1  # squares the model sees for this image

    def cut(self, plane: np.ndarray) -> list[np.ndarray]:
        """A single-channel map of the original size (e.g. a defect mask) placed as the
        image was, zero in the padding: the counterpart of `Tiling.cut`."""
        square = np.zeros((self.size, self.size), np.float32)
        square[self.top : self.top + self.content_h, self.left : self.left + self.content_w] = _resize(
            plane.astype(np.float32, copy=False), self.content_w, self.content_h
        )
        return [square]

    def content(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        """The image's map at working resolution (padding removed)."""
        return crop_to_content(maps[0], self)

    def original(self, content: np.ndarray) -> np.ndarray:
        """A content map resized onto the original image's pixel grid."""
        return _to_original(content, self.original_h, self.original_w)

    def to_original(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        return self.original(self.content(maps))


def _to_original(content: np.ndarray, h: int, w: int) -> np.ndarray:
    """A map resized bilinearly to an image's own h x w pixels."""
    return cv2.resize(content.astype(np.float32, copy=False), (w, h), interpolation=cv2.INTER_LINEAR)


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Area filter when shrinking (no aliasing), bilinear when enlarging."""
    if (h, w) == image.shape[:2]:
        return image
    shrink = h < image.shape[0] or w < image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=4)
def _blend_weights(size: int) -> np.ndarray:
    """Tent weights of a tile's pixels: highest in the middle, where the model sees the
    most context, low (never zero) at the borders."""
    t = np.arange(size, dtype=np.float32)
    w1 = np.maximum(np.minimum(t + 0.5, size - t - 0.5) / (size / 2), 0.02)
    return np.outer(w1, w1)


@dataclass(frozen=True)
class Tiling:
    """How an image was cut into overlapping square tiles of the working size.

    The image is resized by one factor so that its short side spans `tiles` tile widths
    (the frame, frame_h x frame_w); the tiles are size x size crops of the frame at
    `origins` (y, x), spread evenly so that they cover it with the least overlap. A long
    strip is not shrunk to fit one square, and `tiles` > 1 gives a large image more
    detail. Tile maps are blended back into the frame, weighted towards tile centres.
    """

    original_h: int
    original_w: int
    size: int
    frame_h: int
    frame_w: int
    origins: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, h: int, w: int, size: int, tiles: int) -> Tiling:
        short = min(h, w)  # resized to tiles * size
        fh, fw = max(size, round_ratio(h * tiles * size, short)), max(size, round_ratio(w * tiles * size, short))

        def starts(length: int) -> list[int]:
            n = -(-length // size)
            return [0] if n == 1 else [round_ratio(i * (length - size), n - 1) for i in range(n)]

        return cls(h, w, size, fh, fw, tuple((y, x) for y in starts(fh) for x in starts(fw)))

    @property
    def views(self) -> int:
        return len(self.origins)

    def cut(self, image: np.ndarray) -> list[np.ndarray]:
        """The tiles of an image (or of a mask) of the original size."""
        frame = _resize(image, self.frame_w, self.frame_h)
        s = self.size
        return [frame[y : y + s, x : x + s] for y, x in self.origins]

    def content(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        """The tile maps blended into one map of the frame."""
        weights = _blend_weights(self.size)
        acc = np.zeros((self.frame_h, self.frame_w), np.float32)
        total = np.zeros_like(acc)
        s = self.size
        for m, (y, x) in zip(maps, self.origins):
            acc[y : y + s, x : x + s] += m * weights
            total[y : y + s, x : x + s] += weights
        return acc / total

    def original(self, content: np.ndarray) -> np.ndarray:
        """The frame map resized onto the original image's pixel grid."""
        return _to_original(content, self.original_h, self.original_w)

    def to_original(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        return self.original(self.content(maps))


Layout = Placement | Tiling


def check_views(tiling: Tiling) -> None:
    """Refuse an image that would need more than MAX_VIEWS tiles (a very long strip),
    before its frame is resized: its work and memory would grow with its aspect ratio."""
    if tiling.views > MAX_VIEWS:
        raise ImageReadError(
            f"image of {tiling.original_w}x{tiling.original_h} pixels would need {tiling.views} tiles; "
            f"at most {MAX_VIEWS} per image (see docs/limits.md): crop it into shorter pieces"
        )


def uses_tiles(h: int, w: int, mode: str, tiles: int = 1) -> bool:
    if mode == "tile":
        return True
    return mode == "auto" and (tiles > 1 or max(h, w) >= AUTO_TILE_ASPECT * min(h, w))


def working_shape(h: int, w: int, size: int, mode: str = "letterbox", tiles: int = 1) -> tuple[int, int]:
    """The pixel grid the model sees an h x w image on: the tiled frame, or the image
    with its longest side at the working size. Pixel metrics are fair on this grid: a
    finer one rewards nothing the model could resolve, a coarser one (a long strip
    squashed to one square) blurs away the small defects tiling was made for."""
    if uses_tiles(h, w, mode, tiles):
        tiling = Tiling.of(h, w, size, tiles)
        return tiling.frame_h, tiling.frame_w
    return letterbox_shape(h, w, size)


def letterbox_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(content_h, content_w): the image with its longest side at `size`, aspect kept."""
    long = max(h, w)
    return max(1, round_ratio(h * size, long)), max(1, round_ratio(w * size, long))


def limit_detail(
    image: np.ndarray, size: int, mode: str = "letterbox", tiles: int = 1, factor: float = 4.0
) -> np.ndarray:
    """The image area-averaged down to at most `factor` times the pixels per side that the
    model sees of it (`working_shape`); smaller images are returned as they are. For
    images kept whole while training (the held-out ones, painted with synthetic defects
    at their own resolution): a 2448x2048 photo is 60 MB as a float image, and detail
    finer than a quarter of a working pixel is averaged away before the model anyway."""
    h, w = image.shape[:2]
    grid_h, grid_w = working_shape(h, w, size, mode, tiles)
    scale = factor * max(grid_h / h, grid_w / w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def prepare(image: np.ndarray, size: int, mode: str = "letterbox", tiles: int = 1) -> tuple[list[np.ndarray], Layout]:
    """The square model inputs for one image (float32 size x size x C) and how to map
    their heatmaps back: one letterboxed or stretched square, or tiles (see `Tiling`)."""
    h, w = image.shape[:2]
    if uses_tiles(h, w, mode, tiles):
        tiling = Tiling.of(h, w, size, tiles)
        check_views(tiling)
        return [t.astype(np.float32, copy=False) for t in tiling.cut(image)], tiling
    square, placement = fit_to_square(image, size, "letterbox" if mode in ("auto", "tile") else mode)  # type: ignore[arg-type]
    return [square], placement


def per_image(maps: Sequence[np.ndarray], layouts: Sequence[Layout]) -> list[Sequence[np.ndarray]]:
    """Split the model's maps of a batch (all views in order) into each image's views."""
    out, k = [], 0
    for layout in layouts:
        out.append(maps[k : k + layout.views])
        k += layout.views
    if k != len(maps):
        raise ValueError(f"{len(maps)} maps for {k} views")
    return out


def heatmap_and_score(views: Sequence[np.ndarray], layout: Layout) -> tuple[np.ndarray, float]:
    """One image's model maps -> (heatmap at the image's own resolution, image score).

    The score is the maximum over the image's content at working resolution (padding
    excluded), taken before resizing so it does not depend on the original size."""
    content = layout.content(views)
    return layout.original(content), float(content.max())


def heatmaps_and_scores(maps: Sequence[np.ndarray], layouts: Sequence[Layout]) -> list[tuple[np.ndarray, float]]:
    """A batch's model maps (all views in order) -> each image's (heatmap, score)."""
    return [heatmap_and_score(views, layout) for views, layout in zip(per_image(maps, layouts), layouts)]


def fit_to_square(image: np.ndarray, size: int, mode: FitMode = "letterbox") -> tuple[np.ndarray, Placement]:
    """Resize an internal-form image to size x size.

    "letterbox" keeps the aspect ratio and pads with the image's edge pixels
    (so no artificial black border appears in the features); "stretch" squashes.
    Downscaling uses area interpolation (no aliasing), upscaling bilinear. An image
    already of the working size is returned as it is (not copied).
    """
    h, w = image.shape[:2]
    if mode == "stretch" or h == w:
        ch, cw, top, left = size, size, 0, 0
    elif mode == "letterbox":
        ch, cw = letterbox_shape(h, w, size)
        top, left = (size - ch) // 2, (size - cw) // 2
    else:
        raise ValueError(f"unknown fit mode {mode!r}")
    if (ch, cw) == (h, w):
        content = image  # already the working size
    else:
        interp = cv2.INTER_AREA if (ch < h or cw < w) else cv2.INTER_LINEAR
        content = cv2.resize(image, (cw, ch), interpolation=interp)
    if (ch, cw) != (size, size):
        content = cv2.copyMakeBorder(content, top, size - ch - top, left, size - cw - left, cv2.BORDER_REPLICATE)
    return content.astype(np.float32, copy=False), Placement(h, w, size, top, left, ch, cw)


def crop_to_content(square_map: np.ndarray, placement: Placement) -> np.ndarray:
    """The part of a size x size map that covers the image (padding removed)."""
    p = placement
    return square_map[p.top : p.top + p.content_h, p.left : p.left + p.content_w]


def map_to_original(square_map: np.ndarray, placement: Placement) -> np.ndarray:
    """Resize a model-resolution map back onto the original image's pixel grid."""
    return placement.to_original([square_map])


def call_groups(views: Sequence[int], batch_size: int) -> list[range]:
    """Consecutive images for one model call each: at most `batch_size` images and at most
    max(batch_size, MAX_VIEWS) views, so a batch of tiled strips costs no more memory
    than one strip at the tile limit (an image's views always share one call)."""
    limit = max(batch_size, MAX_VIEWS)
    groups: list[range] = []
    start, total = 0, 0
    for k, n in enumerate(views):
        if k > start and (k - start == batch_size or total + n > limit):
            groups.append(range(start, k))
            start, total = k, 0
        total += n
    if start < len(views):
        groups.append(range(start, len(views)))
    return groups


def to_batch(
    images: Iterable[np.ndarray], size: int, mode: str = "letterbox", tiles: int = 1
) -> tuple[np.ndarray, list[Layout]]:
    """Stack internal-form images into the model's input: float32 (V, 3, size, size),
    every view of every image in order (one per image unless tiled), and their layouts."""
    return stack([prepare(img, size, mode, tiles) for img in images], size)


def stack(prepared: Sequence[tuple[list[np.ndarray], Layout]], size: int) -> tuple[np.ndarray, list[Layout]]:
    """`to_batch` for images already through `prepare` (the batch scorer prepares them
    in its decode threads, so the inference thread only stacks)."""
    views = [v for squares, _ in prepared for v in squares]
    batch = np.empty((len(views), 3, size, size), np.float32)
    for k, square in enumerate(views):
        batch[k] = square.transpose(2, 0, 1)
    return batch, [layout for _, layout in prepared]
