"""The batch scorer's memory is bounded by pixels, not only by image count (issue 30):
chunks and the images in flight are planned from the sizes the files' headers declare
(`anomaly.scoring.budget`), so a folder of near-limit images stays under 2 GB at the
default settings, and the plan never deadlocks whatever the sizes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.inspection.imageio import MAX_IMAGE_PIXELS
from anomaly.inspection.layout import MAX_VIEWS
from anomaly.scoring import budget
from anomaly.scoring.budget import PixelBudget, image_pixels, plan_chunks
from anomaly.scoring.inputs import InputItem, collect_inputs, load_input
from anomaly.scoring.local import score_inputs

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default.onnx"
SAMPLES = ROOT / "sample_images" / "washer" / "test"
GOOD = SAMPLES / "good" / "000.png"

needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="models/default.onnx is missing")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _encoded(ext: str, h: int, w: int, params: list[int] | None = None) -> bytes:
    return cv2.imencode(ext, np.full((h, w, 3), 90, np.uint8), params or [])[1].tobytes()


# ----- sizes from headers ---------------------------------------------------------------------
def test_image_pixels_reads_each_format_header_without_decoding(tmp_path: Path) -> None:
    assert image_pixels(_write(tmp_path / "a.png", _encoded(".png", 30, 50))) == 1500
    assert image_pixels(_write(tmp_path / "a.bmp", _encoded(".bmp", 31, 17))) == 527
    # OpenCV writes a TIFF's directory after the pixels, far past the first bytes read
    tif = _write(tmp_path / "a.tif", _encoded(".tif", 400, 300, [cv2.IMWRITE_TIFF_COMPRESSION, 1]))
    assert tif.stat().st_size > 1 << 16 and image_pixels(tif) == 120_000
    jpeg = _encoded(".jpg", 40, 60)
    assert image_pixels(_write(tmp_path / "a.jpg", jpeg)) == 2400
    # metadata segments longer than the first bytes read (EXIF thumbnails, ICC profiles)
    app = b"".join(b"\xff\xe2" + (65535).to_bytes(2, "big") + b"\0" * 65533 for _ in range(3))
    assert image_pixels(_write(tmp_path / "b.jpg", jpeg[:2] + app + jpeg[2:])) == 2400
    assert cv2.imdecode(np.frombuffer(jpeg[:2] + app + jpeg[2:], np.uint8), cv2.IMREAD_COLOR).shape == (40, 60, 3)


def test_image_pixels_of_files_it_cannot_size(tmp_path: Path) -> None:
    # cannot be opened: an ERROR row, nothing decoded
    assert image_pixels(tmp_path / "missing.png") == 0
    # no readable size: it may decode to anything up to the limit
    assert image_pixels(_write(tmp_path / "notes.jpg", b"not an image\n")) == MAX_IMAGE_PIXELS
    assert image_pixels(_write(tmp_path / "zero.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)) == MAX_IMAGE_PIXELS
    # a header declaring more than the limit is refused before decoding; never counted as more
    bomb = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (60000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0"
    assert image_pixels(_write(tmp_path / "bomb.png", bomb)) == MAX_IMAGE_PIXELS


# ----- the plan ---------------------------------------------------------------------------------
def _folder(root: Path, sides: list[tuple[int, int]]) -> list[InputItem]:
    root.mkdir()
    for k, (h, w) in enumerate(sides):
        _write(root / f"{k:02d}.png", _encoded(".png", h, w))
    return collect_inputs(root)


def test_chunks_hold_at_most_batch_size_images_and_the_pixel_budget(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(budget, "IN_FLIGHT_PIXELS", 10_000)
    sides = [(50, 50)] * 5 + [(100, 100), (200, 200), (10, 10), (60, 60), (60, 60), (10, 10)]
    items = _folder(tmp_path / "in", sides)
    chunks = [[px for _, px in c] for c in plan_chunks(items, batch_size=3)]
    # by count (3), by pixels (10,000), and an image larger than the budget alone
    assert chunks == [[2500] * 3, [2500] * 2, [10_000], [40_000], [100, 3600, 3600], [100]]
    assert [x for c in plan_chunks(items, 3) for x, _ in c] == items  # every image once, in order
    # resumed from any chunk boundary, the rest is planned as before (same model calls)
    assert [[px for _, px in c] for c in plan_chunks(items[5:], 3)] == chunks[2:]


def test_budget_admits_within_its_limit_and_one_image_when_empty() -> None:
    pool = PixelBudget(100)
    assert pool.try_take(60) and not pool.try_take(50) and pool.try_take(40)
    pool.give(100)
    assert pool.try_take(500)  # larger than the limit, but nothing else is in flight
    assert not pool.try_take(1)
    taken = threading.Event()
    waiter = threading.Thread(target=lambda: (pool.take(80), taken.set()))
    waiter.start()
    time.sleep(0.05)
    assert not taken.is_set()  # waits for the pixels of finished rows
    pool.give(500)
    waiter.join(5)
    assert taken.is_set() and pool.used == 80


# ----- scoring --------------------------------------------------------------------------------
@needs_model
def test_loaded_for_scoring_keeps_an_8bit_picture_or_none(tmp_path: Path) -> None:
    from anomaly.inspection.imageio import read_image, to_uint8
    from anomaly.inspection.inspector import Inspector

    item = InputItem("good.png", GOOD)
    grid = Inspector(MODEL, threads=1).info.grid
    with_picture = load_input(item, grid)
    assert with_picture.image is not None and with_picture.image.dtype == np.uint8
    assert np.array_equal(with_picture.image, to_uint8(read_image(GOOD)))  # what the overlay draws on
    without = load_input(item, grid, pictures=False)
    assert without.image is None and without.error is None and without.prepared is not None
    internal = load_input(item).image  # without a grid: the internal form, as before
    assert internal is not None and internal.dtype == np.float32


def _rows(out: Path) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@needs_model
def test_a_budget_smaller_than_every_image_scores_one_at_a_time(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k, name in enumerate(sorted(p for p in SAMPLES.rglob("*.png"))[:6]):
        (src / f"{k}.png").write_bytes(name.read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    normal = score_inputs(src, MODEL, tmp_path / "normal", overlays=True, progress=False, threads=1)
    monkeypatch.setattr(budget, "IN_FLIGHT_PIXELS", 1)  # every image alone, decoded only when nothing is in flight
    alone = score_inputs(src, MODEL, tmp_path / "alone", overlays=True, progress=False, threads=1)
    assert (alone.total, alone.passed, alone.failed, alone.errors) == (
        normal.total,
        normal.passed,
        normal.failed,
        normal.errors,
    )
    a, b = _rows(tmp_path / "alone"), _rows(tmp_path / "normal")
    assert a.keys() == b.keys() and all(a[k]["verdict"] == b[k]["verdict"] for k in a)
    assert all(a[k]["score"] == pytest.approx(b[k]["score"], abs=1e-5) for k in a if b[k]["score"] is not None)
    overlays = sorted(p.name for p in (tmp_path / "normal" / "overlays").iterdir())
    assert overlays and overlays == sorted(p.name for p in (tmp_path / "alone" / "overlays").iterdir())


@pytest.mark.slow
@needs_model
def test_near_limit_images_stay_under_2gb_at_default_settings(tmp_path: Path) -> None:
    """A few images near MAX_IMAGE_PIXELS (7000 x 7000), scored with overlays at the
    default batch size: before the pixel budget, all of them were in memory at once."""
    src = tmp_path / "in"
    src.mkdir()
    side = 7000
    assert side * side <= MAX_IMAGE_PIXELS
    base = cv2.resize(cv2.imread(str(GOOD)), (side, side), interpolation=cv2.INTER_NEAREST)
    for k in range(3):
        cv2.imwrite(str(src / f"big{k}.png"), np.roll(base, 311 * k, axis=1), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    # scored first: a strip of MAX_VIEWS tiles, whose one model call grows onnxruntime's
    # arena by hundreds of MB that must not stay held under the large images after it
    strip = cv2.resize(cv2.imread(str(GOOD)), (256 * MAX_VIEWS, 256), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(src / "a_strip.png"), strip)
    # VmHWM is the peak of the scorer's own memory (ru_maxrss would carry the pytest
    # parent's peak across vfork + exec)
    script = (
        "import re, sys; from anomaly.cli import main; code = main(sys.argv[1:]); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); sys.exit(code)"
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", script, "score", str(src), "--model", str(MODEL), "--out", str(out), "--overlays"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), done.stderr  # PASS or FAIL parts, no ERROR row
    peak_mb = int(re.findall(r"^(\d+)$", done.stdout, re.M)[-1]) / 1024
    assert peak_mb < 2048, f"peak {peak_mb:.0f} MB"
    rows = _rows(out)
    assert len(rows) == 4 and all(r["verdict"] in ("PASS", "FAIL") for r in rows.values())
    assert sum(r["width"] == side for r in rows.values()) == 3
    assert len(list((out / "overlays").iterdir())) == 4


@needs_model
def test_an_image_that_fails_to_finish_stops_the_run_without_a_hang(tmp_path: Path, monkeypatch) -> None:
    """Its pixels are given back even though its row was never made, so decoding does not
    wait for them forever and the error reaches the caller."""
    from anomaly.scoring import inference

    src = tmp_path / "in"
    src.mkdir()
    for k, name in enumerate(sorted(SAMPLES.rglob("*.png"))[:5]):
        (src / f"{k}.png").write_bytes(name.read_bytes())

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(budget, "IN_FLIGHT_PIXELS", 1)
    monkeypatch.setattr(inference, "write_overlays", no_room)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            score_inputs(src, MODEL, tmp_path / "out", overlays=True, progress=False, threads=1)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the run hangs"
    assert isinstance(outcome[0], OSError)
