"""A reference integrator: docs/onnx.md turned into code, with onnxruntime, numpy and
OpenCV only (no `anomaly` import), as a C++ or C# integrator would write it.

    python tests/reference_integrator.py MODEL.onnx IMAGE... > results.jsonl

prints one JSON line per image: path, score, verdict, width, height, regions.
tests/test_reference_integrator.py checks that it agrees with `anomaly score`.
"""

from __future__ import annotations

import hashlib
import json
import sys

import cv2
import numpy as np
import onnxruntime as ort

SEAL_ENTRY = b"\x0a\x0bfile_sha256\x12\x40"


def round_ratio(a: int, b: int) -> int:
    """floor(a / b + 1/2) in integers (docs/onnx.md: halves round up)."""
    return (2 * a + b) // (2 * b)


# -- the model ---------------------------------------------------------------------------


class Model:
    def __init__(self, path: str) -> None:
        data = open(path, "rb").read()
        at = data.find(SEAL_ENTRY)
        if at < 0 or data.find(SEAL_ENTRY, at + 1) >= 0:
            raise ValueError(f"{path}: no seal")
        start = at + len(SEAL_ENTRY)
        seal = data[start : start + 64]
        digest = hashlib.sha256(data[:start] + b"0" * 64 + data[start + 64 :]).hexdigest().encode()
        if seal != digest:
            raise ValueError(f"{path}: seal does not match")
        self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("anomaly.format") != "anomaly-onnx/1":
            raise ValueError(f"{path}: not an anomaly-onnx/1 file")
        self.input_name = meta["input_name"]
        self.size = int(meta["input_size"])
        self.fit_mode = meta["fit_mode"]
        self.tiles = int(meta["tiles"])
        self.image_threshold = float(meta["image_threshold"])
        self.pixel_threshold = float(meta["pixel_threshold"])


# -- 1. reading ---------------------------------------------------------------------------


def read_image(path: str) -> np.ndarray:
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: not readable")
    if raw.dtype == np.uint8:
        img = raw.astype(np.float32) * np.float32(1 / 255)
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) * np.float32(1 / 65535)
    else:
        img = np.clip(raw.astype(np.float32), 0, 1)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.shape[2] == 4:
        img = img[:, :, 2::-1] * img[:, :, 3:4]
    if min(img.shape[:2]) < 8:
        raise ValueError(f"{path}: too small")
    return np.ascontiguousarray(img, dtype=np.float32)


# -- 2. cutting ---------------------------------------------------------------------------


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if (h, w) == img.shape[:2]:
        return img
    shrink = h < img.shape[0] or w < img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def starts(length: int, s: int) -> list[int]:
    n = (length + s - 1) // s
    return [0] if n == 1 else [round_ratio(i * (length - s), n - 1) for i in range(n)]


def views(model: Model, img: np.ndarray) -> tuple[list[np.ndarray], dict]:
    h, w = img.shape[:2]
    s = model.size
    tiled = model.fit_mode == "tile" or (model.fit_mode == "auto" and (max(h, w) >= 2 * min(h, w) or model.tiles > 1))
    if tiled:
        m = min(h, w)
        fh = max(s, round_ratio(h * model.tiles * s, m))
        fw = max(s, round_ratio(w * model.tiles * s, m))
        frame = resize(img, fw, fh)
        origins = [(y, x) for y in starts(fh, s) for x in starts(fw, s)]
        return [frame[y : y + s, x : x + s] for y, x in origins], {"tiles": origins, "fh": fh, "fw": fw}
    if model.fit_mode == "stretch" or h == w:
        ch = cw = s
    else:
        ch = max(1, round_ratio(h * s, max(h, w)))
        cw = max(1, round_ratio(w * s, max(h, w)))
    top, left = (s - ch) // 2, (s - cw) // 2
    square = cv2.copyMakeBorder(resize(img, cw, ch), top, s - ch - top, left, s - cw - left, cv2.BORDER_REPLICATE)
    return [square], {"crop": (top, left, ch, cw)}


# -- 3. outputs ---------------------------------------------------------------------------


def content_map(maps: np.ndarray, geometry: dict, s: int) -> np.ndarray:
    if "crop" in geometry:
        top, left, ch, cw = geometry["crop"]
        return maps[0, 0, top : top + ch, left : left + cw]
    t = np.arange(s, dtype=np.float32)
    wt = np.maximum(
        np.minimum(t + np.float32(0.5), np.float32(s) - t - np.float32(0.5)) / np.float32(s / 2), np.float32(0.02)
    )
    weight = np.outer(wt, wt)
    acc = np.zeros((geometry["fh"], geometry["fw"]), np.float32)
    total = np.zeros_like(acc)
    for k, (y, x) in enumerate(geometry["tiles"]):
        acc[y : y + s, x : x + s] += maps[k, 0] * weight
        total[y : y + s, x : x + s] += weight
    return acc / total


# -- 4. decision --------------------------------------------------------------------------


def regions(heatmap: np.ndarray, image_threshold: float, pixel_threshold: float) -> list[dict]:
    strong = heatmap >= image_threshold
    if not strong.any():
        return []
    low = heatmap >= pixel_threshold if pixel_threshold < image_threshold else strong
    n, labels, stats, _ = cv2.connectedComponentsWithStats(low.astype(np.uint8), connectivity=8)
    out = []
    for i in sorted(set(np.unique(labels[strong]).tolist())):
        x, y, w, h, area = (int(v) for v in stats[i])
        peak = float(heatmap[labels == i].max())
        out.append({"x": x, "y": y, "width": w, "height": h, "area": area, "peak": peak})
    return sorted(out, key=lambda r: r["area"], reverse=True)


def inspect(model: Model, path: str) -> dict:
    img = read_image(path)
    h, w = img.shape[:2]
    squares, geometry = views(model, img)
    batch = np.stack([sq.transpose(2, 0, 1) for sq in squares]).astype(np.float32)
    maps, _ = model.session.run(None, {model.input_name: batch})
    content = content_map(maps, geometry, model.size)
    score = float(content.max())
    heatmap = cv2.resize(np.ascontiguousarray(content), (w, h), interpolation=cv2.INTER_LINEAR)
    return {
        "path": path,
        "score": score,
        "verdict": "FAIL" if score >= model.image_threshold else "PASS",
        "width": w,
        "height": h,
        "regions": regions(heatmap, model.image_threshold, model.pixel_threshold),
    }


def main(argv: list[str]) -> int:
    model = Model(argv[0])
    for path in argv[1:]:
        print(json.dumps(inspect(model, path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
