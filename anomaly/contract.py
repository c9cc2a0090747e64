"""The exported ONNX file's contract, written once for both sides.

Export (`anomaly.training.export`) writes it, the runtime (`anomaly.inspection.inspector`)
reads it, and docs/onnx.md describes it for integrators (a test checks that the document
names every key here). No torch and no onnx package: the runtime side reads a file with
onnxruntime alone.

A file carries a seal: `file_sha256` is the SHA-256 of the whole file with that value
written as zeros. Any change to the graph, the weights or the metadata breaks it, so a
foreign graph dressed in copied metadata is refused instead of passing every part.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly.errors import ModelFileError

FORMAT = "anomaly-onnx/1"
FORMAT_KEY = "anomaly.format"
SEAL_KEY = "file_sha256"
INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "image_score")

# Keys every file has (besides FORMAT_KEY and SEAL_KEY), and keys it may have.
REQUIRED_KEYS = (
    "input_name",
    "input_shape",
    "input_size",
    "layout",
    "channel_order",
    "value_range",
    "dtype",
    "fit_mode",
    "tiles",
    "resize",
    "outputs",
    "score_scale",
    "image_threshold",
    "pixel_threshold",
    "target_false_reject",
    "model_kind",
    "train_count",
    "holdout_count",
    "train_image_sizes",
    "train_data",
    "trained",
    "created",
    "project_version",
    "config",
)
OPTIONAL_KEYS = ("image_threshold_f1", "pixel_threshold_f1", "f1_source", "quantization", "train_suspects")
# What a person wants to see about a model, in display order.
SUMMARY_KEYS = (
    "model_kind",
    "input_size",
    "fit_mode",
    "tiles",
    "image_threshold",
    "pixel_threshold",
    "train_count",
    "train_image_sizes",
    "train_data",
    "train_suspects",
    "trained",
    "created",
    "project_version",
    SEAL_KEY,
)

# Sizes and tile starts below round halves up: round_ratio(a, b) = (2a + b) // (2b).
_LETTERBOX = (
    "keep aspect ratio, longest side to input_size (sizes round_ratio(side * S, longest side)); area "
    "filter when shrinking, bilinear when enlarging; pad by replicating edge pixels, centred"
)
_TILE = (
    "resize (same filters) so the short side is tiles x input_size; cut input_size squares, n = "
    "ceil(side / input_size) per side, starts round_ratio(i * (side - input_size), n - 1); blend their "
    "maps with tent weights max(min(t + 0.5, S - t - 0.5) / (S / 2), 0.02) per axis; see docs/onnx.md"
)
RESIZE_TEXT = {
    "letterbox": _LETTERBOX,
    "stretch": "stretch to input_size x input_size (area filter when shrinking, bilinear when enlarging)",
    "tile": _TILE,
    "auto": f"tile as in fit_mode tile when the long side >= 2 x the short side or tiles > 1, else {_LETTERBOX}",
}

_ZERO_SEAL = "0" * 64


@dataclass(frozen=True)
class ModelInfo:
    """What an ONNX file says about itself (its metadata_props), parsed."""

    path: Path
    input_size: int
    fit_mode: str
    tiles: int
    image_threshold: float
    pixel_threshold: float
    model_kind: str
    metadata: dict[str, str]

    @property
    def grid(self) -> tuple[int, str, int]:
        """(working size, fit mode, tiles): how images reach the model (layout.prepare)."""
        return self.input_size, self.fit_mode, self.tiles

    @property
    def digest(self) -> str:
        """The file's seal: names this exact model in results and reports."""
        return self.metadata.get(SEAL_KEY, "")

    @classmethod
    def from_metadata(cls, path: Path, meta: Mapping[str, str]) -> ModelInfo:
        if meta.get(FORMAT_KEY) != FORMAT:
            raise ModelFileError(
                f"{path}: not an anomaly inspection model (no '{FORMAT}' metadata); export it with `anomaly export`"
            )
        try:
            return cls(
                path=path,
                input_size=int(meta["input_size"]),
                fit_mode=meta.get("fit_mode", "letterbox"),
                tiles=int(meta.get("tiles", "1")),
                image_threshold=float(meta["image_threshold"]),
                pixel_threshold=float(meta["pixel_threshold"]),
                model_kind=meta.get("model_kind", "?"),
                metadata=dict(meta),
            )
        except (KeyError, ValueError) as exc:
            raise ModelFileError(f"{path}: model metadata is incomplete ({exc})") from exc

    def summary(self) -> dict[str, Any]:
        """The facts an inspector or integrator wants to see, in display order."""
        return {k: self.metadata.get(k, "") for k in SUMMARY_KEYS}


# A metadata entry is a protobuf message: 0x0a <len> key, 0x12 <len = 64> value.
_SEAL_ENTRY = re.compile(
    re.escape(b"\x0a" + bytes([len(SEAL_KEY)]) + SEAL_KEY.encode() + b"\x12\x40") + b"([0-9a-f]{64})"
)


def _zeroed_digest(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """(SHA-256 of the file with its seal value zeroed, where that value sits or None)."""
    found = list(_SEAL_ENTRY.finditer(data))
    if len(found) != 1:
        return hashlib.sha256(data).hexdigest(), None
    start, end = found[0].span(1)
    return hashlib.sha256(data[:start] + _ZERO_SEAL.encode() + data[end:]).hexdigest(), (start, end)


def seal_placeholder() -> tuple[str, str]:
    """The (key, value) to put into the metadata before writing; `seal_file` fills it in."""
    return SEAL_KEY, _ZERO_SEAL


def seal_file(path: str | Path) -> str:
    """Fill in the seal of a file written with `seal_placeholder` (same length, in place)."""
    path = Path(path)
    data = path.read_bytes()
    digest, span = _zeroed_digest(data)
    if span is None:
        raise ModelFileError(f"{path}: no seal placeholder in the metadata")
    path.write_bytes(data[: span[0]] + digest.encode() + data[span[1] :])
    return digest


def check_seal(path: Path, data: bytes) -> str:
    """The file's digest if its seal holds; ModelFileError if it was changed after export."""
    digest, span = _zeroed_digest(data)
    if span is None:
        raise ModelFileError(f"{path}: the model file carries no seal ({SEAL_KEY}); re-export it with `anomaly export`")
    if data[span[0] : span[1]].decode() != digest:
        raise ModelFileError(
            f"{path}: the model file was changed after export (its seal does not match its "
            "contents); re-export it with `anomaly export`"
        )
    return digest
