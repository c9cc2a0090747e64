"""The inspection dashboard (ui/app.py) driven headless with Streamlit's AppTest.

The sample images used are chosen with the runtime itself: the defective washer the
model scores highest (a FAIL) and the good washer it scores lowest (a PASS), so the
tests hold for whichever model models/default.onnx currently is.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "ui" / "app.py"
MODEL = ROOT / "models" / "default.onnx"
SAMPLES = ROOT / "sample_images" / "washer" / "test"

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="models/default.onnx is missing (export a model first)")

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
sys.path.insert(0, str(ROOT / "ui"))


@pytest.fixture(autouse=True)
def feedback_dir(tmp_path, monkeypatch):
    """Decisions on uploads go to a temporary folder, not ./feedback of the checkout."""
    from anomaly.ui import feedback

    monkeypatch.setattr(feedback, "FEEDBACK_DIR", tmp_path / "feedback")
    return tmp_path / "feedback"


@pytest.fixture(scope="module")
def picks() -> dict:
    """A defective sample the model fails and a good sample it passes, with scores."""
    from anomaly.inspection.imageio import read_image
    from anomaly.inspection.inspector import Inspector

    ins = Inspector(MODEL)
    good = sorted((SAMPLES / "good").glob("*.png"))
    bad = sorted(p for p in SAMPLES.glob("*/*.png") if p.parent.name != "good")
    good_scores = ins.score([read_image(p) for p in good])[1]
    bad_scores = ins.score([read_image(p) for p in bad])[1]
    failing = np.flatnonzero(bad_scores >= ins.image_threshold)
    assert failing.size, "the model fails none of the defective samples"
    # the borderline failure: its verdict flips within the slider's range (0 .. 3x calibrated)
    k_bad, k_good = int(failing[bad_scores[failing].argmin()]), int(good_scores.argmin())
    assert bad_scores[k_bad] + 0.05 <= 3.0 * ins.image_threshold
    assert good_scores[k_good] < ins.image_threshold, "the model passes none of the good samples"
    return {
        "bad": bad[k_bad],
        "bad_score": float(bad_scores[k_bad]),
        "good": good[k_good],
        "good_score": float(good_scores[k_good]),
        "threshold": float(ins.image_threshold),
        "info": ins.info.summary(),
    }


def upload(path: Path, name: str | None = None) -> tuple[str, bytes, str]:
    return (name or f"{path.parent.name}_{path.name}", path.read_bytes(), "image/png")


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def cards(at: AppTest) -> dict[str, str]:
    """{card title: verdict} in page order (a title is followed by its badge)."""
    out, title = {}, None
    for md in at.main.markdown:
        v = md.value
        if 'class="card-title"' in v:
            title = v.split('class="card-title">', 1)[1].split("</p>", 1)[0]
        if 'class="verdict ' in v and title is not None:
            out[title] = v.split('class="verdict ', 1)[1].split(">", 1)[1].split("</span>", 1)[0]
            title = None
    return out


def sidebar_text(at: AppTest) -> str:
    return "\n".join(m.value for m in [*at.sidebar.markdown, *at.sidebar.caption, *at.sidebar.warning])


def test_default_model_loads_with_metadata(picks):
    at = start()
    text = sidebar_text(at)
    assert "Trained on" in text and "Input size" in text and "Image threshold" in text and "Trained" in text
    assert f"{picks['info']['input_size']} × {picks['info']['input_size']} px" in text
    if picks["info"]["train_data"]:
        assert picks["info"]["train_data"] in text
    assert at.sidebar.selectbox(key="model_choice").value == "default.onnx"
    assert at.sidebar.slider(key="threshold").value == pytest.approx(picks["threshold"])
    assert [t.label for t in at.tabs] == ["Inspect", "Batch", "Review"]
    assert not at.error


def test_defect_fails_and_good_passes(picks):
    at = start()
    at.file_uploader(key="image_uploader").set_value(
        [upload(picks["bad"], "defect.png"), upload(picks["good"], "good.png")]
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert cards(at) == {"defect.png": "FAIL", "good.png": "PASS"}
    captions = [c for i in at.main.image for c in i.captions]
    assert captions.count("Image") == 2 and captions.count("Heatmap + defect outlines") == 2
    assert any(f"{picks['bad_score']:.3f}" in m.value for m in at.main.markdown)
    assert len(at.main.dataframe) >= 1  # the batch table
    assert any('class="regions"' in m.value and "Position (x, y)" in m.value for m in at.main.markdown)


def test_sample_button_loads_examples():
    at = start()
    at.button(key="load_samples").click().run()
    assert not at.exception, [e.value for e in at.exception]
    found = cards(at)
    assert len(found) == 8 and set(found.values()) <= {"PASS", "FAIL"}
    assert any(n.startswith("good/") for n in found) and any(not n.startswith("good/") for n in found)
    at.button(key="clear_samples").click().run()
    assert cards(at) == {}


def test_threshold_slider_flips_verdict_and_reset(picks):
    at = start()
    at.file_uploader(key="image_uploader").set_value(
        [upload(picks["bad"], "defect.png"), upload(picks["good"], "good.png")]
    )
    at.run()
    assert cards(at)["defect.png"] == "FAIL"
    at.sidebar.slider(key="threshold").set_value(round(picks["bad_score"] + 0.05, 2)).run()
    assert not at.exception
    assert cards(at) == {"defect.png": "PASS", "good.png": "PASS"}
    assert "1 of 2" in sidebar_text(at) and "now PASS" in sidebar_text(at)
    at.sidebar.slider(key="threshold").set_value(max(0.0, round(picks["good_score"] - 0.05, 2))).run()
    assert cards(at) == {"defect.png": "FAIL", "good.png": "FAIL"}
    at.sidebar.button(key="reset_threshold").click().run()
    assert at.sidebar.slider(key="threshold").value == pytest.approx(picks["threshold"])
    assert cards(at) == {"defect.png": "FAIL", "good.png": "PASS"}
    assert "No verdict changed" in sidebar_text(at)


def test_corrupt_upload_shows_error_card_and_others_proceed(picks):
    at = start()
    at.file_uploader(key="image_uploader").set_value(
        [
            ("broken.png", b"\x89PNG\r\n\x1a\n this is not an image", "image/png"),
            upload(picks["bad"], "defect.png"),
            ("notes.txt", b"hello", "text/plain"),
        ]
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.main.error]
    assert any("broken.png" in e for e in errors) and any("notes.txt" in e for e in errors)
    assert cards(at) == {"broken.png": "ERROR", "defect.png": "FAIL", "notes.txt": "ERROR"}
    metrics = {m.label: m.value for m in at.main.metric}
    assert metrics["Unreadable"] == "2" and metrics["FAIL"] == "1"


def test_extra_inputs_hook_and_bad_model_upload(picks):
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["extra_inputs"] = [("hooked.png", picks["good"].read_bytes())]
    at.run()
    assert cards(at) == {"hooked.png": "PASS"}
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("broken.onnx", b"not a model at all", "application/octet-stream")
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("broken.onnx" in e.value for e in at.sidebar.error)
    # shown in the main area too, and the previous model's verdicts are gone
    assert any("broken.onnx" in e.value and "No verdicts" in e.value for e in at.main.error)
    assert cards(at) == {}


def test_batch_exports(picks):
    from anomaly.inspection.inspector import Inspector
    from anomaly.ui import logic, tables

    ins = Inspector(MODEL)
    files = [("a/defect.png", picks["bad"].read_bytes()), ("good.png", picks["good"].read_bytes()), ("bad.png", b"x")]
    items = logic.inspect_files(ins, files)
    frame = tables.results_frame(items, logic.decide(items, picks["threshold"]), picks["threshold"])
    ctx = tables.ExportContext(picks["threshold"], "default.onnx", ins.info.digest, "Ana")
    rows = list(csv.DictReader(io.StringIO(tables.results_csv(frame, ctx).decode())))
    from anomaly.scoring.schema import CSV_COLUMNS

    assert list(rows[0]) == [*CSV_COLUMNS, *tables.CONTEXT_COLUMNS]
    assert [r["verdict"] for r in rows] == ["FAIL", "PASS", "ERROR"] and "bad.png" in rows[2]["error"]
    assert int(rows[0]["regions"]) >= 1 and int(rows[0]["largest_region_area"]) > 0
    assert {(r["model"], r["model_digest"], r["operator"]) for r in rows} == {("default.onnx", ins.info.digest, "Ana")}
    assert [float(r["threshold"]) for r in rows] == pytest.approx([picks["threshold"]] * 3) and rows[0]["date"]
    with zipfile.ZipFile(io.BytesIO(tables.overlays_zip(items, ctx, picks["threshold"]))) as zf:
        assert sorted(zf.namelist()) == ["overlays/a/defect.png", "overlays/good.png", "results.csv"]


def test_large_image_is_downscaled_for_display_only(picks):
    import cv2

    from anomaly.inspection.inspector import Inspector
    from anomaly.ui import logic, views

    img = cv2.imread(str(picks["bad"]))
    big = cv2.resize(img, (2400, 1800), interpolation=cv2.INTER_LINEAR)
    data = cv2.imencode(".png", big)[1].tobytes()
    ins = Inspector(MODEL)
    full = ins.inspect(big[:, :, ::-1].astype(np.float32) / 255.0)
    item = logic.inspect_files(ins, [("big.png", data)])[0]
    # no full-resolution copy is kept: the heatmap is capped, the picture display-sized
    assert item.ok and item.size == (2400, 1800) and item.inspection.heatmap.shape == (1536, 2048)
    assert max(item.display_image.shape[:2]) == views.DISPLAY_MAX_SIDE and item.downscaled
    assert not hasattr(item, "image")
    assert item.inspection.score == pytest.approx(full.score)  # the verdict is the full-size run's
    for view in ("original", "heatmap", "outline"):
        assert logic.item_view(item, item.at(1.0), view).shape == item.display_image.shape
    # regions are reported in original pixels (positions within a capped pixel of the full-size ones)
    big_regions, ref = item.regions(item.inspection), full.regions
    assert len(big_regions) == len(ref) >= 1
    assert abs(big_regions[0].x - ref[0].x) <= 3 and abs(big_regions[0].area - ref[0].area) <= 0.1 * ref[0].area


def make_scored_folder(tmp: Path, picks) -> Path:
    out = tmp / "scored"
    (out / "overlays" / "crack").mkdir(parents=True)
    header = ["path", "score", "verdict", "regions", "largest_region_area", "error"]
    rows = [
        dict(zip(header, r))
        for r in [
            ("good/000.png", "0.500000", "PASS", "0", "0", ""),
            ("crack/001.png", "1.200000", "FAIL", "1", "150", ""),
            ("broken.png", "", "ERROR", "0", "0", "broken.png: not a readable image (corrupt or unsupported format)"),
            ("dent/001.png", "1.500000", "FAIL", "2", "90", ""),
        ]
    ]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "run.json").write_text(json.dumps({"input": str(SAMPLES), "image_threshold": 1.0}))
    (out / "overlays" / "crack" / "001.png.jpg").write_bytes((SAMPLES / "crack" / "001.png").read_bytes())
    return out


def test_review_scored_folder_failures_first(tmp_path, picks):
    from anomaly.ui import review as logic

    out = make_scored_folder(tmp_path, picks)
    run = logic.load_scored_folder(out)
    assert list(run.table["path"]) == ["dent/001.png", "crack/001.png", "broken.png", "good/000.png"]
    assert logic.review_image(run, "crack/001.png")[1] == "overlay"
    assert logic.review_image(run, "dent/001.png")[1] == "original"

    at = start()
    at.text_input(key="review_folder").input(str(out)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert cards(at)["dent/001.png"] == "FAIL"
    captions = [c for i in at.main.image for c in i.captions]
    assert "Original" in captions and "Original (no saved overlay)" in captions
    at.button(key="review_next_top").click().run()
    assert "crack/001.png" in cards(at)
    assert at.number_input(key="review_pos").value == 2
    # the clean original beside the saved overlay
    captions = [c for i in at.main.image for c in i.captions]
    assert "Original" in captions and any(c.startswith("Heatmap (saved overlay") for c in captions)
    at.button(key="review_next_bottom").click().run()  # paging controls at the bottom too
    assert cards(at) == {"broken.png": "ERROR"}
    errors = [e.value for e in at.main.error]
    assert len(errors) == 1 and "broken.png" in errors[0] and not at.main.warning  # the reason, once

    at.text_input(key="review_folder").input(str(tmp_path / "nowhere")).run()
    assert not at.exception and any("no such folder" in e.value for e in at.main.error)


def test_dashboard_does_not_import_torch():
    import ast
    import subprocess

    forbidden = ("torch", "anomaly.training")
    for path in (APP, *sorted((ROOT / "anomaly" / "ui").glob("*.py"))):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.startswith(forbidden)], (path, names)
    code = (
        "import sys; import anomaly.ui.logic, anomaly.ui.review, anomaly.ui.feedback, anomaly.ui.report; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_review_reads_empty_numbers_and_overlay_names(tmp_path):
    """An ERROR row of `anomaly score` has empty regions fields; overlays are found under
    their current name (suffix .jpg appended unless present) and the older .png name."""
    from anomaly.ui import review as logic

    (tmp_path / "overlays").mkdir()
    (tmp_path / "results.csv").write_text(
        "path,score,verdict,regions,largest_region_area,error\n"
        "x/bad.png,,ERROR,,,x/bad.png: not a readable image (corrupt or unsupported format)\n"
        "a.jpg,1.5,FAIL,1,40,\n"
        "b.png,1.2,FAIL,1,10,\n"
        "c.bmp,1.1,FAIL,1,10,\n"
    )
    (tmp_path / "overlays" / "a.jpg").write_bytes((SAMPLES / "crack" / "001.png").read_bytes())
    (tmp_path / "overlays" / "a.png").write_bytes(b"another image's overlay")
    (tmp_path / "overlays" / "b.png.jpg").write_bytes((SAMPLES / "crack" / "001.png").read_bytes())
    (tmp_path / "overlays" / "c.bmp.png").write_bytes((SAMPLES / "crack" / "001.png").read_bytes())  # older run
    run = logic.load_scored_folder(tmp_path)
    assert list(run.table["path"]) == ["a.jpg", "b.png", "c.bmp", "x/bad.png"]
    assert list(run.table["regions"]) == [1, 1, 1, 0] and run.counts() == {"FAIL": 3, "ERROR": 1, "PASS": 0}
    assert logic.review_image(run, "a.jpg") == (tmp_path / "overlays" / "a.jpg", "overlay")
    assert logic.review_image(run, "b.png") == (tmp_path / "overlays" / "b.png.jpg", "overlay")
    assert logic.review_image(run, "c.bmp") == (tmp_path / "overlays" / "c.bmp.png", "overlay")
    with pytest.raises(logic.ReviewError, match="no results.csv"):
        logic.load_scored_folder(tmp_path / "overlays")
