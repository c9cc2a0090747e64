"""docs/onnx.md is the whole contract: tests/reference_integrator.py (onnxruntime, numpy
and OpenCV only, written from the document) reproduces `anomaly score` exactly on the
sizes and formats where an integrator could go wrong: letterbox sizes that land on a
half (512x301, 512x257), strips that tile (2:1 both ways), 16-bit, RGBA, gray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "default.onnx"
SAMPLES = ROOT / "sample_images" / "washer" / "test"
sys.path.insert(0, str(Path(__file__).parent))
import reference_integrator as ref  # noqa: E402


def _bgr(name: str) -> np.ndarray:
    img = cv2.imread(str(SAMPLES / name), cv2.IMREAD_COLOR)
    assert img is not None, name
    return img


def _write_cases(folder: Path) -> list[Path]:
    folder.mkdir()
    crack, good = _bgr("crack/000.png"), _bgr("good/000.png")
    cases = {
        "letterbox_512x301.png": cv2.resize(crack, (512, 301), interpolation=cv2.INTER_AREA),
        "letterbox_512x257.png": cv2.resize(crack, (512, 257), interpolation=cv2.INTER_AREA),
        "letterbox_301x512_good.png": cv2.resize(good, (301, 512), interpolation=cv2.INTER_AREA),
        "strip_512x256_good.png": np.hstack([good, _bgr("good/001.png")]),
        "strip_257x771_good.png": cv2.resize(
            np.vstack([good, _bgr("good/001.png"), _bgr("good/002.png")]), (257, 771), interpolation=cv2.INTER_AREA
        ),
        "strip_600x300.png": np.hstack([cv2.resize(crack, (300, 300)), cv2.resize(good, (300, 300))]),
        "strip_257x771.png": cv2.resize(np.vstack([good, crack, good]), (257, 771), interpolation=cv2.INTER_AREA),
        "gray_333x219.png": cv2.cvtColor(
            cv2.resize(crack, (333, 219), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY
        ),
    }
    sixteen = cv2.resize(crack, (403, 377), interpolation=cv2.INTER_AREA).astype(np.uint16) * 257
    sixteen[::7] += 100  # values that are no multiple of 257
    cases["sixteen_403x377.png"] = sixteen
    rgba = cv2.cvtColor(cv2.resize(crack, (517, 300), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2BGRA)
    rgba[:, :, 3] = np.linspace(120, 255, 517, dtype=np.uint8)[None, :]
    cases["rgba_517x300.png"] = rgba
    paths = []
    for name, img in cases.items():
        assert cv2.imwrite(str(folder / name), img)
        paths.append(folder / name)
    return paths


def _assert_same(ours: dict, theirs: dict, label: str) -> None:
    assert ours["score"] == pytest.approx(theirs["score"], abs=1e-5), label
    assert ours["verdict"] == theirs["verdict"], label
    assert (ours["width"], ours["height"]) == (theirs["width"], theirs["height"]), label
    boxes = [(r["x"], r["y"], r["width"], r["height"], r["area"]) for r in ours["regions"]]
    assert boxes == [(r["x"], r["y"], r["width"], r["height"], r["area"]) for r in theirs["regions"]], label
    for a, b in zip(ours["regions"], theirs["regions"]):
        assert a["peak"] == pytest.approx(b["peak"], abs=1e-5), label


def test_reference_integrator_reproduces_anomaly_score(tmp_path: Path) -> None:
    paths = _write_cases(tmp_path / "images")
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "anomaly",
            "score",
            str(tmp_path / "images"),
            "--model",
            str(MODEL),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr
    runtime = {Path(r["path"]).name: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    model = ref.Model(str(MODEL))
    verdicts = set()
    for path in paths:
        ours = ref.inspect(model, str(path))
        _assert_same(ours, runtime[path.name], path.name)
        verdicts.add(ours["verdict"])
    assert verdicts == {"PASS", "FAIL"}  # both kinds of decision were compared
    assert any(r["regions"] for r in runtime.values())


def test_pixel_threshold_above_image_threshold_falls_back(tmp_path: Path) -> None:
    """With a pixel threshold higher than the image threshold the mask uses the image
    threshold (docs/onnx.md, Decision): the integrator and Inspector agree on it."""
    from anomaly.inspection.inspector import Inspector

    path = _write_cases(tmp_path / "images")[0]
    inspector, model = Inspector(MODEL), ref.Model(str(MODEL))
    for pixel in (0.3, 1.5):
        theirs = inspector.inspect(path, pixel_threshold=pixel).to_dict()
        img = ref.read_image(str(path))
        squares, geometry = ref.views(model, img)
        maps, _ = model.session.run(None, {model.input_name: np.stack([s.transpose(2, 0, 1) for s in squares])})
        content = ref.content_map(maps, geometry, model.size)
        heatmap = cv2.resize(
            np.ascontiguousarray(content), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR
        )
        ours = ref.regions(heatmap, model.image_threshold, pixel)
        assert theirs["regions"], pixel
        assert [(r["x"], r["y"], r["width"], r["height"], r["area"]) for r in ours] == [
            (r["x"], r["y"], r["width"], r["height"], r["area"]) for r in theirs["regions"]
        ], pixel


def test_integrator_imports_no_anomaly() -> None:
    source = (Path(__file__).parent / "reference_integrator.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "hashlib", "json", "sys", "cv2", "numpy", "onnxruntime"}, imports
