"""Issue 30's table, one test per row: hostile files, API misuse and resource limits.

Every case gets a row, a clear one-line error or a refusal with exit 2; nothing crashes,
nothing is lost or written twice, and nothing that was not inspected PASSes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.cli import main
from anomaly.errors import ModelFileError
from anomaly.inspection.imageio import MAX_IMAGE_PIXELS, ImageReadError, decode_image, read_image, to_internal
from anomaly.inspection.inspector import Inspection, Inspector
from anomaly.inspection.layout import MAX_VIEWS, call_groups, prepare
from anomaly.scoring.local import score_inputs
from anomaly.scoring.schema import printable

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default.onnx"
GOOD = ROOT / "sample_images" / "washer" / "test" / "good" / "000.png"
CRACK = ROOT / "sample_images" / "washer" / "test" / "crack" / "001.png"
FAST = dict(progress=False, threads=1)

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="models/default.onnx is missing")


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector(MODEL, threads=1)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _anomaly(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anomaly", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


# ----- file names that are not UTF-8 -----------------------------------------------------
def _latin1_folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(GOOD.read_bytes())
    (src / "c.png").write_bytes(CRACK.read_bytes())
    with open(os.path.join(os.fsencode(src), b"caf\xe9.png"), "wb") as f:  # Latin-1 'é'
        f.write(GOOD.read_bytes())
    return src


def test_non_utf8_file_name_gets_an_escaped_row_and_reruns_resume(tmp_path: Path) -> None:
    src, out = _latin1_folder(tmp_path), tmp_path / "out"
    summary = score_inputs(src, MODEL, out, overlays=True, **FAST)
    assert (summary.total, summary.errors) == (3, 0)
    rows = _rows(out)
    assert [r["path"] for r in rows] == ["a.png", "c.png", "caf\\xe9.png"]
    assert rows[2]["verdict"] == "PASS" and rows[2]["score"] == rows[0]["score"]  # the same picture
    assert (out / "results.csv").read_text(encoding="utf-8").count("\n") == 4
    again = score_inputs(src, MODEL, out, overlays=True, **FAST)
    assert (again.scored, again.resumed) == (0, 3)
    assert len(_rows(out)) == 3


def test_non_utf8_file_name_with_overlays_from_the_command_line(tmp_path: Path) -> None:
    src, out = _latin1_folder(tmp_path), tmp_path / "out"
    done = _anomaly("score", src, "--model", MODEL, "--out", out, "--overlays", "--quiet")
    assert done.returncode == 1, done.stderr  # the crack fails; no crash (was: segfault, no rows)
    assert len(_rows(out)) == 3
    os.remove(os.path.join(os.fsencode(src), b"caf\xe9.png"))
    again = _anomaly("score", src, "--model", MODEL, "--out", out, "--quiet")
    assert again.returncode == 1, again.stderr


def test_printable_is_lossless_and_leaves_valid_text_alone() -> None:
    raw = os.fsdecode(b"caf\xe9/\xff.png")
    assert printable(raw) == "caf\\xe9/\\xff.png"
    assert printable("café.png") == "café.png"


# ----- thresholds ------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "abc"])
def test_bad_threshold_is_refused_with_exit_2(tmp_path: Path, value: str, capsys) -> None:
    for option in ("--threshold", "--pixel-threshold"):
        with pytest.raises(SystemExit) as exc:
            main(["score", str(GOOD), "--model", str(MODEL), "--out", str(tmp_path / "out"), f"{option}={value}"])
        assert exc.value.code == 2
        assert option in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_nan_score_or_threshold_never_passes() -> None:
    heat = np.zeros((8, 8), np.float32)
    mask = np.zeros((8, 8), bool)
    assert Inspection(math.nan, 1.0, 0.5, heat, mask).verdict == "FAIL"
    assert Inspection(0.1, math.nan, 0.5, heat, mask).verdict == "FAIL"
    assert Inspection(0.1, 1.0, 0.5, heat, mask).verdict == "PASS"


# ----- arrays through the API ------------------------------------------------------------
def test_uint8_and_uint16_arrays_score_as_their_file(inspector: Inspector) -> None:
    from_file = inspector.inspect(GOOD).score
    rgb8 = cv2.cvtColor(cv2.imread(str(GOOD), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert inspector.inspect(rgb8).score == pytest.approx(from_file, abs=1e-5)
    assert inspector.inspect(rgb8.astype(np.uint16) * 257).score == pytest.approx(from_file, abs=1e-5)
    assert inspector.inspect(rgb8.astype(np.float64) / 255).score == pytest.approx(from_file, abs=1e-5)
    assert inspector.inspect(rgb8).verdict == "PASS"


def test_gray_and_rgba_arrays_are_converted_as_files_are(inspector: Inspector) -> None:
    gray = cv2.imread(str(GOOD), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(to_internal(gray), to_internal(np.dstack([gray] * 3)))
    rgba = np.dstack([np.dstack([gray] * 3), np.full_like(gray, 255)])
    np.testing.assert_array_equal(to_internal(rgba), to_internal(np.dstack([gray] * 3)))
    assert inspector.inspect(gray).verdict == inspector.inspect(rgba).verdict


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_arrays_are_refused(inspector: Inspector, value: float) -> None:
    image = np.full((64, 64, 3), 0.5, np.float32)
    image[3, 4, 1] = value
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        inspector.inspect(image)
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        inspector.inspect(np.full((64, 64, 3), math.nan, np.float32))


@pytest.mark.parametrize(
    "bad",
    [
        None,
        b"\x89PNG...",
        "",
        np.zeros((3, 64, 64), np.float32),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros(64),
        np.zeros((64, 64, 2), np.uint8),
        np.zeros((64, 64, 5), np.uint8),
        np.zeros((64, 64, 3), bool),
        np.zeros((64, 64, 3), np.int64),
        np.zeros((1, 64, 64, 3), np.float32),
        [[0.5] * 64] * 64,
    ],
    ids=["None", "bytes", "empty-str", "CHW", "empty", "1-D", "2-ch", "5-ch", "bool", "int64", "NHWC", "list"],
)
def test_misused_inputs_get_one_message_naming_the_accepted_shapes(inspector: Inspector, bad: object) -> None:
    with pytest.raises(ImageReadError) as exc:
        inspector.inspect(bad)  # type: ignore[arg-type]
    message = str(exc.value)
    assert any(words in message for words in ("(H, W, 3) RGB", "too small", "a folder, not an image file"))
    assert "\n" not in message


@pytest.mark.parametrize("side", [1, 4, 7])
def test_tiny_arrays_are_refused_like_tiny_files(inspector: Inspector, tmp_path: Path, side: int) -> None:
    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), np.zeros((side, side, 3), np.uint8))
    with pytest.raises(ImageReadError, match="too small"):
        read_image(path)
    with pytest.raises(ImageReadError, match="too small"):
        inspector.inspect(np.zeros((side, side, 3), np.float32))
    assert inspector.inspect(np.zeros((8, 8, 3), np.float32)).verdict in ("PASS", "FAIL")


# ----- folders: links, pages, strips, huge headers -----------------------------------------
def test_symlink_loop_and_dangling_link_each_get_an_error_row(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "good.png").write_bytes(GOOD.read_bytes())
    os.symlink("loop_b.png", src / "loop_a.png")
    os.symlink("loop_a.png", src / "loop_b.png")
    os.symlink("gone.png", src / "dangling.png")
    summary = score_inputs(src, MODEL, out, **FAST)
    assert (summary.total, summary.passed, summary.errors, summary.exit_code) == (4, 1, 3, 3)
    errors = {r["path"]: r["error"] for r in _rows(out) if r["verdict"] == "ERROR"}
    assert "broken symbolic link" in errors["dangling.png"]
    assert "symbolic link loop" in errors["loop_a.png"] and "symbolic link loop" in errors["loop_b.png"]


def test_multi_page_tiff_is_an_error_row_not_a_page_1_pass(tmp_path: Path) -> None:
    page = cv2.imread(str(GOOD), cv2.IMREAD_GRAYSCALE)
    src = tmp_path / "in"
    src.mkdir()
    assert cv2.imwritemulti(str(src / "two.tif"), [page, cv2.imread(str(CRACK), cv2.IMREAD_GRAYSCALE)])
    assert cv2.imwrite(str(src / "one.tif"), page)
    with pytest.raises(ImageReadError, match="TIFF with 2 pages"):
        read_image(src / "two.tif")
    rows = {r["path"]: r for r in (score_inputs(src, MODEL, tmp_path / "out", **FAST), _rows(tmp_path / "out"))[1]}
    assert rows["two.tif"]["verdict"] == "ERROR" and "only single-page" in rows["two.tif"]["error"]
    assert rows["one.tif"]["verdict"] == "PASS"


def test_long_strip_past_the_tile_cap_is_refused_quickly(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    strip = np.random.default_rng(0).integers(0, 255, (16, 4000), np.uint8)
    cv2.imwrite(str(src / "strip.png"), strip)
    start = time.perf_counter()
    summary = score_inputs(src, MODEL, tmp_path / "out", **FAST)
    assert time.perf_counter() - start < 10  # was 20 s and 6 GB for one row
    row = _rows(tmp_path / "out")[0]
    assert summary.errors == 1 and "250 tiles" in row["error"] and f"at most {MAX_VIEWS}" in row["error"]
    assert "strip.png" in row["error"]
    views, _ = prepare(np.zeros((16, 16 * MAX_VIEWS, 3), np.float32), 256, "auto")
    assert len(views) == MAX_VIEWS  # the cap itself is accepted


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds almost nothing."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + len(ihdr).to_bytes(4, "big")
        + chunk
        + zlib.crc32(chunk).to_bytes(4, "big")
        + zlib.compress(b"\0" * 1000)
    )


def test_a_file_declaring_a_huge_image_is_refused_before_decoding() -> None:
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(_png_header(30000, 30000), "bomb.png")
    with pytest.raises(ImageReadError, match="too large"):
        to_internal(np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (MAX_IMAGE_PIXELS // 8 + 1, 9), (0, 0)))
    assert time.perf_counter() - start < 1


def test_model_calls_are_bounded_in_views() -> None:
    assert call_groups([1] * 20, 8) == [range(0, 8), range(8, 16), range(16, 20)]
    assert call_groups([MAX_VIEWS, 1, MAX_VIEWS, 4, 4], 8) == [range(0, 1), range(1, 2), range(2, 3), range(3, 5)]
    assert all(sum(([10] * 9)[k] for k in g) <= MAX_VIEWS for g in call_groups([10] * 9, 8))


# ----- the command line and the dashboard --------------------------------------------------
def test_out_that_is_a_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.csv"
    out.write_text("not a folder\n")
    assert main(["score", str(GOOD), "--model", str(MODEL), "--out", str(out), "--quiet"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder\n"


def test_model_with_one_output_is_one_load_error_and_exit_2(tmp_path: Path, capsys) -> None:
    onnx = pytest.importorskip("onnx")
    from test_contract import _tiny_graph

    from anomaly.contract import SEAL_KEY, seal_file

    meta = {p.key: p.value for p in onnx.load(str(MODEL)).metadata_props}
    meta[SEAL_KEY] = "0" * 64
    one = seal_file_path = _tiny_graph(("anomaly_map",), meta, tmp_path / "one.onnx")
    seal_file(seal_file_path)
    assert main(["score", str(GOOD), "--model", str(one), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outputs" in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_refused_dashboard_upload_leaves_nothing_on_disk(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("streamlit")
    from anomaly.ui import sidebar

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    load = getattr(sidebar.load_model_upload, "__wrapped__", sidebar.load_model_upload)
    with pytest.raises(ModelFileError, match="upload.onnx"):
        load("0" * 40, b"not a model", "upload.onnx")
    assert list(tmp_path.iterdir()) == []
    assert load("1" * 40, MODEL.read_bytes(), "default.onnx").info.digest
    assert list(tmp_path.iterdir()) == []
