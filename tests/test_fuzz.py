"""Property-based fuzzing of every entry point that takes images (issue 30).

Random bytes, truncated and re-encoded images, odd shapes, dtypes, bit depths, extreme
aspect ratios and hostile file names go to `read_image`, `Inspector.inspect`, the batch
scorer and the dashboard's upload logic. The properties: only the documented error
(ImageReadError) escapes, never another exception or a crash; every input gets exactly
one row or item; nothing that was not inspected PASSes; and a hostile folder's memory
and time stay bounded. Example counts are small so the file runs in CI in about a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anomaly.inspection.imageio import ImageReadError, decode_image, read_image, to_internal
from anomaly.inspection.inspector import Inspector
from anomaly.inspection.layout import MAX_VIEWS
from anomaly.scoring.local import score_inputs

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default.onnx"
GOOD = ROOT / "sample_images" / "washer" / "test" / "good" / "000.png"

# about a minute in all: CI runs it, the fast tier (-m "not slow") leaves it out
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not MODEL.is_file(), reason="models/default.onnx is missing")]
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
FEW = settings(FUZZ, max_examples=8)


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector(MODEL, threads=1)


# ----- strategies ----------------------------------------------------------------------
# Sides from degenerate to long strips (past the tile cap) with few pixels overall.
sides = st.one_of(st.integers(1, 12), st.integers(13, 96), st.sampled_from([8 * MAX_VIEWS, 8 * MAX_VIEWS + 8, 700]))
dtypes = st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int16, np.bool_, np.int64])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of any of the shapes an integrator might pass: gray, 1-5 channels, CHW,
    batches, 1-D, with ordinary and non-finite values."""
    h, w = draw(sides), draw(sides)
    if h * w > 8 * MAX_VIEWS * 96:  # a long strip, not a large square: keep each example cheap
        h = min(h, 16)
    shape = draw(
        st.sampled_from(
            [
                (h, w),
                (h, w, 1),
                (h, w, 3),
                (h, w, 4),
                (3, h, w),
                (h, w, 2),
                (h, w, 5),
                (1, h, w, 3),
                (h * w,),
                (0, w, 3),
            ]
        )
    )
    dtype = draw(dtypes)
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1.0, 2.0, width=32) | st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0])
        fill = draw(elements)
        arr = np.full(shape, fill, dtype)
        if arr.size and draw(st.booleans()):
            arr.flat[draw(st.integers(0, arr.size - 1))] = draw(elements)
        return arr
    return draw(hnp.arrays(dtype, shape, elements=None if dtype is np.bool_ else st.integers(0, 200)))


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    """Encoded images: valid ones of many depths and sizes, truncated, bit-flipped,
    re-encoded, or plain random bytes."""
    kind = draw(st.sampled_from(["random", "valid", "truncated", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    h, w = draw(sides), draw(sides)
    if h * w > 8 * MAX_VIEWS * 96:
        h = min(h, 16)
    ext = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tif"]))
    depth = np.uint16 if ext in (".png", ".tif") and draw(st.booleans()) else np.uint8
    channels = draw(st.sampled_from([1, 3, 4] if ext != ".jpg" else [1, 3]))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 200, (h, w, channels)).astype(depth)
    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    data = buf.tobytes()
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flipped":
        flipped = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            flipped[draw(st.integers(0, len(flipped) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(flipped)
    return data


# Names: non-UTF-8 bytes, spaces, quotes, newlines, leading dashes, unicode, very long.
name_bytes = st.lists(
    st.sampled_from(
        [
            b"a",
            b"Z",
            b"\xe9",
            b"\xff",
            b" ",
            b"'",
            b'"',
            b"\n",
            b"-",
            b"#",
            b",",
            "ü".encode(),
            "部".encode(),
            b"..",
            b"\\",
        ]
    ),
    min_size=1,
    max_size=12,
)


def _not_a_pass_unless_inspected(verdict: str, score: float | None) -> None:
    assert verdict in ("PASS", "FAIL", "ERROR")
    if verdict != "ERROR":
        assert score is not None and np.isfinite(score)


# ----- read_image and decode_image -----------------------------------------------------
@FUZZ
@given(data=encoded())
def test_decode_gives_the_internal_form_or_image_read_error(data: bytes) -> None:
    try:
        image = decode_image(data, "fuzz.png")
    except ImageReadError as exc:
        assert "fuzz.png" in str(exc)
        return
    assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= 8 and np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1


@FEW
@given(name=name_bytes, data=encoded())
def test_read_image_with_hostile_names(tmp_path: Path, name: list[bytes], data: bytes) -> None:
    path = os.path.join(os.fsencode(tmp_path), b"".join(name).replace(b"/", b"_") + b".png")
    with open(path, "wb") as f:
        f.write(data)
    try:
        read_image(os.fsdecode(path))
    except ImageReadError:
        pass
    finally:
        os.remove(path)


# ----- Inspector.inspect -----------------------------------------------------------------
@FUZZ
@given(image=arrays())
def test_inspect_arrays_verdict_or_image_read_error(inspector: Inspector, image: np.ndarray) -> None:
    try:
        insp = inspector.inspect(image)
    except ImageReadError as exc:
        assert "\n" not in str(exc)
        return
    _not_a_pass_unless_inspected(insp.verdict, insp.score)
    assert insp.heatmap.shape == image.shape[:2]
    internal = to_internal(image)  # whatever was inspected is a valid image of that size
    assert internal.shape[:2] == image.shape[:2]


@FEW
@given(values=st.sampled_from([np.nan, np.inf, -np.inf]), dtype=st.sampled_from([np.float32, np.float64]))
def test_non_finite_images_never_pass(inspector: Inspector, values: float, dtype: type) -> None:
    with pytest.raises(ImageReadError):
        inspector.inspect(np.full((32, 32, 3), values, dtype))


# ----- the batch scorer --------------------------------------------------------------------
@settings(FUZZ, max_examples=6)
@given(files=st.lists(st.tuples(name_bytes, encoded()), min_size=1, max_size=6))
def test_batch_scorer_one_row_per_file(tmp_path_factory: pytest.TempPathFactory, files) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    src, out = root / "in", root / "out"
    src.mkdir()
    written = set()
    for k, (name, data) in enumerate(files):
        raw = b"".join(name).replace(b"/", b"_").replace(b"\n", b"_").replace(b"\\", b"_")
        raw = b"%d-%s.png" % (k, raw)
        with open(os.path.join(os.fsencode(src), raw), "wb") as f:
            f.write(data)
        written.add(raw)
    summary = score_inputs(src, MODEL, out, batch_size=4, progress=False, threads=1)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(written) == summary.total  # no row lost, none twice
    assert len({r["path"] for r in rows}) == len(rows)
    for r in rows:
        _not_a_pass_unless_inspected(r["verdict"], r["score"])
        assert (r["error"] is None) == (r["verdict"] != "ERROR")
    csv_lines = (out / "results.csv").read_text(encoding="utf-8").splitlines()
    assert len(csv_lines) >= len(rows) + 1  # a name with a comma or quote is quoted, never lost
    again = score_inputs(src, MODEL, out, progress=False, threads=1)
    assert (again.scored, again.resumed) == (0, len(rows))


# ----- the dashboard ------------------------------------------------------------------------
@settings(FUZZ, max_examples=8)
@given(files=st.lists(st.tuples(st.text(min_size=1, max_size=20), encoded()), min_size=1, max_size=5))
def test_dashboard_uploads_one_item_each(inspector: Inspector, files: list[tuple[str, bytes]]) -> None:
    logic = pytest.importorskip("anomaly.ui.logic")
    uploads = pytest.importorskip("anomaly.ui.uploads")
    items = logic.inspect_files(inspector, files)
    names = [n for it in items for n in (it.name, *getattr(it, "also", ()))]
    assert len(items) == len({uploads.digest(d) for _, d in files})  # identical uploads are one item
    assert {n for n, _ in files} <= {n.rsplit(" (", 1)[0] for n in names} | set(names)
    for it in items:
        assert (it.error is None) == it.ok
        if it.ok:
            _not_a_pass_unless_inspected(it.inspection.verdict, it.inspection.score)


# ----- a hostile folder: memory and time bounded ----------------------------------------------
def _hostile_folder(src: Path) -> int:
    """Strips past the tile cap, headers declaring huge images, multi-page TIFFs, random
    and truncated files, tiny images and a few good ones."""
    src.mkdir()
    rng = np.random.default_rng(0)
    good = GOOD.read_bytes()
    files = {f"good{k}.png": good for k in range(4)}
    for k, (h, w) in enumerate([(16, 4000), (4000, 16), (8, 6000), (16, 16 * MAX_VIEWS)]):
        files[f"strip{k}.png"] = cv2.imencode(".png", rng.integers(0, 255, (h, w), np.uint8))[1].tobytes()
    from test_hostile_inputs import _png_header

    for k, side in enumerate([20000, 60000, 7072]):
        files[f"bomb{k}.png"] = _png_header(side, side)
    page = cv2.imread(str(GOOD), cv2.IMREAD_GRAYSCALE)
    ok, multi = cv2.imencodemulti(".tiff", [page, page, page]) if hasattr(cv2, "imencodemulti") else (False, None)
    if ok:
        files["pages.tif"] = multi.tobytes()
    for k in range(8):
        files[f"random{k}.jpg"] = rng.integers(0, 256, 200 + 300 * k, np.uint8).tobytes()
    files["half.png"] = good[: len(good) // 2]
    files["tiny.png"] = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    for name, data in files.items():
        (src / name).write_bytes(data)
    return len(files)


def test_hostile_folder_memory_and_time_are_bounded(tmp_path: Path) -> None:
    count = _hostile_folder(tmp_path / "in")
    # VmHWM is the peak of this program's own memory; ru_maxrss would also count the pytest
    # process it was spawned from (Linux keeps the parent's peak across vfork + exec)
    script = (
        "import re, sys; from anomaly.cli import main; code = main(sys.argv[1:]); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); sys.exit(code)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "score",
            str(tmp_path / "in"),
            "--model",
            str(MODEL),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--overlays",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 3, done.stderr
    peak_mb = int(done.stdout.split()[-1]) / 1024
    assert peak_mb < 2048, f"peak {peak_mb:.0f} MB"
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == count
    assert {r["verdict"] for r in rows if r["path"].startswith(("good", "strip3"))} <= {"PASS", "FAIL"}
    assert all(r["verdict"] == "ERROR" for r in rows if not r["path"].startswith(("good", "strip3")))
