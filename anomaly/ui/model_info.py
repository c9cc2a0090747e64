"""The dashboard's models folder and what it tells an inspector about a model.

Which .onnx files the sidebar offers (MODELS_DIR, default.onnx first), and a model's
metadata (`Inspector.info.summary()`) as (label, value) rows in an inspector's words.
Free of Streamlit so it can be tested.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path, PurePosixPath

from anomaly.inspection.inspector import Inspector

# Relative to the folder the dashboard runs in (`anomaly ui --models DIR` sets it).
MODELS_DIR = Path(os.environ.get("ANOMALY_MODELS_DIR", "models"))
DEFAULT_MODEL = "default.onnx"

MODEL_KINDS = {
    "feature_ae": "Feature autoencoder (EfficientNet-Lite0 features)",
    "patch_memory": "Patch memory (nearest normal EfficientNet-Lite0 patch)",
    "ae": "Convolutional autoencoder",
    "vae": "Variational autoencoder",
}


def list_models(models_dir: Path = MODELS_DIR) -> list[Path]:
    """The .onnx files in the models folder, default.onnx first, then by name."""
    if not models_dir.is_dir():
        return []
    files = sorted(p for p in models_dir.iterdir() if p.is_file() and p.suffix.lower() == ".onnx")
    return sorted(files, key=lambda p: (p.name != DEFAULT_MODEL, p.name.lower()))


def format_date(value: str) -> str:
    if not value:
        return "unknown"
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        return value
    offset = d.utcoffset()
    suffix = " UTC" if offset is not None and offset.total_seconds() == 0 else ""
    return d.strftime("%Y-%m-%d %H:%M") + suffix


def _format_number(value: str, digits: int = 3) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return value or "unknown"


def _fit_text(summary: dict[str, str]) -> str:
    """How parts reach the model's square, in an inspector's words."""
    mode, tiles = summary.get("fit_mode") or "letterbox", summary.get("tiles") or "1"
    if mode == "tile" or (mode == "auto" and tiles != "1"):
        return f"cut into tiles, {tiles} across the short side"
    if mode == "auto":
        return "letterbox; long strips cut into tiles"
    return mode


def _suspects_text(listed: str) -> str:
    """The training images that stood out at training time (metadata `train_suspects`):
    possibly defective parts in the good folder, for the engineer to look at."""
    if not listed:
        return "not checked (trained without screening)"
    try:
        entries = json.loads(listed)
    except ValueError:
        return "unknown"
    if not entries:
        return "none stood out"
    left = sum(bool(e.get("left_out")) for e in entries)
    names = ", ".join(f"{e.get('path')} ({float(e.get('score', 0)):.2f})" for e in entries[:5])
    more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
    return f"{len(entries)} stood out, {left} left out of the model: {names}{more}"


def model_facts(inspector: Inspector) -> list[tuple[str, str]]:
    """`Inspector.info.summary()` as (label, value) rows an inspector can read."""
    s = inspector.info.summary()
    data = s.get("train_data") or ""
    trained_on = PurePosixPath(data.replace("\\", "/")).name if data else "unknown"
    count = s.get("train_count")
    if count:
        trained_on += f" — {count} good images"
        if s.get("train_image_sizes"):
            trained_on += f", {s['train_image_sizes'].replace('x', ' × ')} px"
    size = s.get("input_size")
    return [
        ("Trained on", trained_on),
        ("Data folder", data or "unknown"),
        ("Model type", MODEL_KINDS.get(s.get("model_kind", ""), s.get("model_kind") or "unknown")),
        ("Input size", f"{size} × {size} px ({_fit_text(s)})" if size else "unknown"),
        ("Image threshold", _format_number(s.get("image_threshold", ""))),
        ("Pixel threshold", _format_number(s.get("pixel_threshold", ""))),
        ("Training images to check", _suspects_text(s.get("train_suspects") or "")),
        ("Trained", format_date(s.get("trained", ""))),
        ("Exported", format_date(s.get("created", ""))),
        ("Software version", s.get("project_version") or "unknown"),
    ]
