"""Uploaded files before inspection: duplicates, names, unreadable files, and the bundled samples.

Files arrive as (name, bytes) pairs. Identical bytes become one upload; different files
that share a name are told apart; an empty, truncated or non-image file is named with
its problem before any decoder sees it. Free of Streamlit so it can be tested.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

SAMPLES_DIR = Path("sample_images") / "washer" / "test"
# A few good parts and one example of each defect type.
SAMPLE_SELECTION = (
    "good/000.png",
    "good/001.png",
    "good/002.png",
    "crack/001.png",
    "dent/001.png",
    "missing/001.png",
    "scratch/001.png",
    "stain/001.png",
)


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass(frozen=True)
class Upload:
    """One distinct uploaded file: `name` is unique in the batch (its relative path when a
    folder was uploaded); `also` lists other names the same bytes were uploaded under."""

    name: str
    data: bytes
    digest: str
    also: tuple[str, ...] = ()


def unique_uploads(files: Sequence[tuple[str, bytes]]) -> list[Upload]:
    """Identical files (same bytes) become one entry; different files that share a name
    (001.png from two folders) get ' (2)', ' (3)' so every row names one part."""
    by_digest: dict[str, int] = {}
    names: list[str] = []
    out: list[Upload] = []
    for name, data in files:
        d = digest(data)
        if d in by_digest:
            k = by_digest[d]
            if name != out[k].name and name not in out[k].also:
                out[k] = replace(out[k], also=(*out[k].also, name))
            continue
        label, n = name, 2
        while label in names:
            label, n = f"{name} ({n})", n + 1
        names.append(label)
        by_digest[d] = len(out)
        out.append(Upload(label, data, d))
    return out


IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def image_kind(data: bytes) -> str | None:
    return next((kind for magic, kind in IMAGE_SIGNATURES if data.startswith(magic)), None)


def read_problem(name: str, data: bytes) -> str | None:
    """Why a file cannot be inspected, told apart: empty, cut short, or not an image;
    None when it looks whole. A PNG without its end chunk, or a JPEG without its end
    marker, decodes with a grey remainder that the model would flag as a defect."""
    if not data:
        return f"{name}: empty file (0 bytes); the upload or copy may have failed"
    kind = image_kind(data)
    if kind is None:
        return f"{name}: not an image file (expected PNG, JPEG, BMP or TIFF)"
    tail = data.rstrip(b"\x00\r\n ")
    if (kind == "PNG" and b"IEND" not in tail[-12:]) or (kind == "JPEG" and not tail.endswith(b"\xff\xd9")):
        return f"{name}: truncated {kind} file ({len(data)} bytes; the end of the image is missing)"
    return None


def has_alpha(data: bytes) -> bool:
    """PNG colour types 4 and 6 (grey or RGB with alpha); the only common alpha format."""
    return data.startswith(b"\x89PNG") and len(data) > 25 and data[25] in (4, 6)


def sample_files(selection: Iterable[str] = SAMPLE_SELECTION, root: Path = SAMPLES_DIR) -> list[tuple[str, bytes]]:
    """The bundled example images as (name, bytes), named like 'crack/001.png'."""
    out = []
    for rel in selection:
        path = root / rel
        if path.is_file():
            out.append((rel, path.read_bytes()))
    return out
