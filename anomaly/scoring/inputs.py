"""The images a scoring run reads: what INPUT names, and each image decoded (and prepared).

Both engines list INPUT here and decode with `load_input`, so they name every image, and
word every unreadable file, the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from anomaly.inspection.imageio import IMAGE_EXTENSIONS, list_images, read_image, to_uint8
from anomaly.inspection.layout import Layout, prepare
from anomaly.scoring.schema import printable


class InputItem(NamedTuple):
    """One image to score: `label` is what the results call it (relative to the input
    folder, or the line as written in a list file); `path` is where to read it."""

    label: str
    path: Path


# The model's fit of an image to its working size: (size, fit mode, tiles), as ModelInfo.grid.
Grid = tuple[int, str, int]
# An image's model inputs (its square views) and how to map their maps back onto it.
Prepared = tuple[list[np.ndarray], Layout]


class Loaded(NamedTuple):
    """An input after decoding: the image and, when asked for, its prepared model
    inputs; or, if it could not be read, `error` saying why and naming the file.

    Loaded for scoring (with the model's grid), `image` is the picture overlays are
    drawn on, 8-bit RGB (`to_uint8`, as `overlays.overlay` would make it: a quarter of
    the float image's memory while it waits for the model), or None when no overlay
    is wanted; the image's size is then in the layout."""

    item: InputItem
    image: np.ndarray | None
    error: str | None
    prepared: Prepared | None = None


def collect_inputs(input: str | Path) -> list[InputItem]:
    """The images named by INPUT: a folder (recursive), a text file with one path per
    line (relative paths against the list file's folder; blank lines and # comments
    ignored), or a single image file. Duplicates are listed once. A file name that is
    not valid UTF-8 is labelled with its bytes escaped (`schema.printable`)."""
    src = Path(input)
    if src.is_dir():
        items = [InputItem(printable(p.relative_to(src).as_posix()), p) for p in list_images(src)]
    elif src.is_file() and src.suffix.lower() in IMAGE_EXTENSIONS:
        items = [InputItem(printable(src.name), src)]
    elif src.is_file():
        try:
            text = src.read_text(encoding="utf-8-sig")
        except (UnicodeDecodeError, OSError) as exc:
            raise ValueError(f"{src}: not a text file listing image paths ({exc})") from exc
        items = []
        for line in text.splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            p = Path(entry).expanduser()
            items.append(InputItem(entry, p if p.is_absolute() else src.parent / p))
    else:
        raise FileNotFoundError(f"{src}: no such folder or image list")
    seen: set[str] = set()
    unique = [it for it in items if not (it.label in seen or seen.add(it.label))]  # type: ignore[func-returns-value]
    if not unique:
        raise ValueError(f"{src}: no images found")
    return unique


def load_input(item: InputItem, grid: Grid | None = None, pictures: bool = True) -> Loaded:
    """Decode one image and, given the model's grid, prepare its model inputs too (the
    image is then kept as 8-bit RGB for overlays, or not at all without `pictures`);
    never raises for a bad file (the error names the file), so one bad image costs one
    row."""
    try:
        image = read_image(item.path)
        if grid is None:
            return Loaded(item, image, None)
        prepared = prepare(image, *grid)
        return Loaded(item, to_uint8(image) if pictures else None, None, prepared)
    except Exception as exc:  # any decode failure becomes an ERROR row
        msg = str(exc) or type(exc).__name__
        if str(item.path) not in msg and item.label not in msg:
            msg = f"{item.path}: {msg}"
        return Loaded(item, None, msg)
