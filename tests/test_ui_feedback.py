"""Issue 31: the dashboard for a shift of inspectors, as page logic (no browser).

Part identity, unreadable files told apart, calm views with outlines that stand out,
RGBA as the runtime sees it, no full-size copies kept, inspector decisions (saved,
resumed, exported as a labelled folder the trainer reads), the threshold they suggest,
and the printable report.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default.onnx"
SAMPLES = ROOT / "sample_images" / "washer" / "test"
APP = ROOT / "ui" / "app.py"

needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="models/default.onnx is missing (export a model first)")


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]) if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb)[
        1
    ].tobytes()


@pytest.fixture(scope="module")
def inspector():
    from anomaly.inspection.inspector import Inspector

    return Inspector(MODEL)


# ----- 1. part identity ----------------------------------------------------------------
def test_identical_uploads_once_and_same_names_told_apart():
    from anomaly.ui.uploads import unique_uploads

    a, b = (SAMPLES / "crack" / "001.png").read_bytes(), (SAMPLES / "dent" / "001.png").read_bytes()
    ups = unique_uploads([("001.png", a), ("001.png", b), ("copy.png", a), ("001.png", a), ("crack/001.png", a)])
    assert [u.name for u in ups] == ["001.png", "001.png (2)"]
    assert ups[0].also == ("copy.png", "crack/001.png") and ups[1].data == b


# ----- 8. unreadable files, told apart -------------------------------------------------
@needs_model
def test_empty_truncated_and_non_image_files_get_distinct_messages(inspector):
    from anomaly.ui.logic import inspect_files
    from anomaly.ui.uploads import read_problem

    good = (SAMPLES / "good" / "000.png").read_bytes()
    jpeg = cv2.imencode(".jpg", cv2.imread(str(SAMPLES / "good" / "000.png")))[1].tobytes()
    assert read_problem("ok.png", good) is None and read_problem("ok.jpg", jpeg) is None
    items = inspect_files(
        inspector,
        [
            ("empty.png", b""),
            ("cut.png", good[: len(good) // 2]),
            ("cut.jpg", jpeg[:-200]),
            ("notes.png", b"hello, not a picture"),
            ("ok.png", good),
        ],
    )
    errors = {it.name: it.error for it in items}
    assert "empty file (0 bytes)" in errors["empty.png"]
    assert "truncated PNG" in errors["cut.png"] and "truncated JPEG" in errors["cut.jpg"]
    assert "not an image file" in errors["notes.png"]
    assert errors["ok.png"] is None and items[-1].ok


# ----- 6. views: calm good parts, outlines that stand out --------------------------------
def test_views_calm_below_pixel_threshold_warm_colours_and_double_outline():
    from anomaly.ui.views import compose

    image = np.full((100, 100, 3), 120, np.uint8)
    heat = np.full((100, 100), 0.3, np.float32)  # below the pixel threshold everywhere
    calm = compose(image, heat, np.zeros((100, 100), bool), 0.5, 1.0, "heatmap", 0.8)
    assert np.array_equal(calm, image), "a calm part shows as it is: no speckle"
    heat[20:60, 20:60] = np.linspace(0.5, 2.0, 40)[None, :]
    mask = heat >= 0.5
    out = compose(image, heat, mask, 0.5, 1.0, "heatmap", 1.0)
    warm = out[25:55, 25:55].reshape(-1, 3).astype(int)
    assert (warm[:, 0] >= warm[:, 1]).all() and (warm[:, 1] >= warm[:, 2]).all(), "yellow to red, no green or cyan"
    ring = out[18:22, 18:62].reshape(-1, 3)
    assert (ring == 255).all(axis=1).any() and (ring == 0).all(axis=1).any(), "white inside black"
    only = compose(image, heat, mask, 0.5, 1.0, "outline")
    assert np.array_equal(only[40, 40], image[40, 40]), "outline only: no heat inside"
    assert np.array_equal(compose(image, heat, mask, 0.5, 1.0, "original"), image)


# ----- 8. RGBA as the runtime sees it -----------------------------------------------------
@needs_model
def test_rgba_is_shown_composited_as_the_runtime_inspects_it(inspector):
    from anomaly.inspection.imageio import decode_image, to_uint8
    from anomaly.ui.logic import inspect_files
    from anomaly.ui.views import display_decode

    bgr = cv2.imread(str(SAMPLES / "good" / "000.png"))
    alpha = np.full(bgr.shape[:2], 128, np.uint8)
    data = cv2.imencode(".png", np.dstack([bgr, alpha]))[1].tobytes()
    shown, size, transparent = display_decode(data, "half.png", 4096)
    runtime = to_uint8(decode_image(data, "half.png"))
    assert transparent and size == (bgr.shape[1], bgr.shape[0])
    assert np.abs(shown.astype(int) - runtime.astype(int)).max() <= 1
    item = inspect_files(inspector, [("half.png", data)])[0]
    assert item.transparent and np.abs(item.display_image.astype(int) - runtime.astype(int)).max() <= 1


# ----- 7. memory: huge review views decode once --------------------------------------------
def test_review_picture_is_display_sized_and_cached(tmp_path):
    from anomaly.ui.review import load_picture

    path = tmp_path / "huge.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8))
    first = load_picture(path)
    t = time.perf_counter()
    again = load_picture(path)
    assert time.perf_counter() - t < 0.01 and again is first
    assert first.size == (4000, 3000) and max(first.rgb.shape[:2]) == 1024


# ----- 2. decisions ---------------------------------------------------------------------
def test_decisions_append_resume_undo_and_survive_a_cut_line(tmp_path):
    from anomaly.ui.feedback import DecisionStore, counts

    store = DecisionStore(tmp_path)
    kw = dict(threshold=1.0, model="m.onnx", model_digest="abc123")
    store.record("k1", "crack/001.png", "good", verdict="FAIL", score=1.4, note=" scuff, not a crack ", **kw)
    store.record("k2", "good/000.png", "good", verdict="PASS", score=0.3, **kw)
    store.record("k1", "crack/001.png", "defect", verdict="FAIL", score=1.4, **kw)  # changed mind
    store.record("k3", "dent/001.png", "unsure", verdict="PASS", score=0.9, **kw)
    store.record("k3", "dent/001.png", None, verdict="PASS", score=0.9, **kw)  # undo
    with open(store.path, "a") as f:
        f.write('{"key": "k4", "decis')  # a crash mid-line
    again = DecisionStore(tmp_path).load()  # a new session resumes
    assert (
        set(again) == {"k1", "k2"} and again["k1"]["decision"] == "defect" and again["k1"]["model_digest"] == "abc123"
    )
    assert counts(again) == {"defect": 1, "good": 1, "unsure": 0, "overruled": 0}
    assert len(store.path.read_text().splitlines()) == 6, "append-only"
    with pytest.raises(ValueError):
        store.record("k5", "x.png", "maybe", verdict="PASS", score=0.1, **kw)  # type: ignore[arg-type]


def test_labelled_export_is_read_by_the_trainer_and_evaluator(tmp_path):
    """The exported folder as `anomaly train --defects` reads it: mask-less confirmed
    defects are accepted (image threshold only)."""
    pytest.importorskip("torch")
    from anomaly.config import ModelConfig
    from anomaly.evaluation.datasets import find_test_set
    from anomaly.training.detector import Detector
    from anomaly.ui.feedback import DecisionStore, labelled_zip

    store = DecisionStore(tmp_path / "run")
    kw = dict(threshold=1.0, model="m.onnx", model_digest="abc")
    images = {}
    for key, rel, decision in [
        ("a", "crack/001.png", "defect"),
        ("b", "dent/001.png", "defect"),
        ("c", "good/000.png", "good"),
        ("d", "good/001.png", "unsure"),
    ]:
        store.record(key, rel, decision, verdict="FAIL", score=1.2, **kw)
        images[key] = (SAMPLES / rel).read_bytes()
    with zipfile.ZipFile(io.BytesIO(labelled_zip(store.load(), images, name="lab"))) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "out")
    assert {
        "lab/test/defect/crack__001.png",
        "lab/test/defect/dent__001.png",
        "lab/test/good/good__000.png",
        "lab/decisions.jsonl",
        "lab/manifest.csv",
    } == names
    samples = find_test_set(tmp_path / "out" / "lab")
    assert sorted((s.defect, s.path.name) for s in samples) == [
        ("defect", "crack__001.png"),
        ("defect", "dent__001.png"),
        ("good", "good__000.png"),
    ]
    labelled = Detector(ModelConfig())._load_labelled(tmp_path / "out" / "lab")
    assert sorted((d, m is None) for _, d, m in labelled) == [(False, False), (True, True), (True, True)]


def test_suggested_threshold_from_confirmed_parts():
    from anomaly.ui.feedback import recall_and_false_rejects, suggest_threshold

    assert suggest_threshold([1.2, 1.5], [0.4], 1.0) == 1.0  # nothing missed: keep it
    assert suggest_threshold([0.8, 0.9, 1.3], [0.5], 1.0) == 0.8  # catch the missed two
    assert suggest_threshold([0.6, 0.9, 1.3], [0.7, 0.75], 1.0) == 0.9  # 0.6 would reject both good parts
    assert recall_and_false_rejects([0.5, 1.5, 0.9, 1.1], [False, True, True, False], 1.0) == (0.5, 0.5)


# ----- 3. report --------------------------------------------------------------------------
def test_html_report_has_facts_histogram_and_every_failure():
    from anomaly.ui.report import ReportPart, html_report

    pic = np.zeros((600, 800, 3), np.uint8)
    parts = [
        ReportPart(
            f"crack/00{i}.png",
            1.2 + i,
            [("Original", pic), ("Heatmap", pic), ("Outline", pic)],
            [{"x": 1, "y": 2}],
            "defect" if i else "",
            "scuff" if i else "",
        )
        for i in range(2)
    ]
    page = html_report(
        "Report",
        [("Model digest", "f00dfeed"), ("Threshold", "0.550"), ("Date", "2026-01-02")],
        [0.2, 1.2, 2.2, float("nan")],
        ["PASS", "FAIL", "FAIL", "ERROR"],
        0.55,
        parts,
    ).decode()
    assert "f00dfeed" in page and "0.550" in page and "2026-01-02" in page and "<svg" in page
    assert page.count("data:image/jpeg;base64,") == 6 and "crack/001.png" in page and "scuff" in page
    assert "1 unreadable" in page and "2 FAIL" in page


# ----- the page: decisions in Inspect and Review -------------------------------------------
@needs_model
def test_inspect_and_review_decisions_are_saved(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from anomaly.ui import feedback

    monkeypatch.setattr(feedback, "FEEDBACK_DIR", tmp_path / "feedback")
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["extra_inputs"] = [("crack/001.png", (SAMPLES / "crack" / "001.png").read_bytes())]
    at.run()
    key = next(b.key for b in at.button if b.key and b.key.startswith("fb_") and b.key.endswith("_good"))
    at.text_input(key=key.replace("_good", "_note")).input("only a scuff")
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    saved = list((tmp_path / "feedback").glob("inspect-*/decisions.jsonl"))
    rec = json.loads(saved[0].read_text().splitlines()[-1])
    assert rec["decision"] == "good" and rec["note"] == "only a scuff" and rec["model_digest"]
    assert (saved[0].parent / rec["image"]).is_file()  # the upload kept for the labelled export
    assert any('data-decision="good"' in m.value for m in at.main.markdown)

    # Review: overrule a FAIL
    out = tmp_path / "scored"
    (out / "overlays").mkdir(parents=True)
    (out / "results.csv").write_text(
        "path,score,verdict,regions,largest_region_area,error\n"
        "crack/001.png,1.5,FAIL,1,90,\ngood/000.png,0.4,PASS,0,0,\n"
    )
    (out / "results.jsonl").write_text(
        json.dumps(
            {
                "path": "crack/001.png",
                "score": 1.5,
                "verdict": "FAIL",
                "regions": [{"x": 10, "y": 20, "width": 30, "height": 40, "area": 900, "peak": 1.5}],
            }
        )
        + "\n"
    )
    (out / "run.json").write_text(json.dumps({"input": str(SAMPLES), "image_threshold": 1.0, "model": str(MODEL)}))
    at.text_input(key="review_folder").input(str(out)).run()
    assert any("10, 20" in m.value and "Position (x, y)" in m.value for m in at.main.markdown)
    good_btn = next(b.key for b in at.button if b.key and b.key.startswith("rv_") and b.key.endswith("_good"))
    at.button(key=good_btn).click().run()
    recs = feedback.DecisionStore(out).load()
    assert [(r["path"], r["decision"], r["verdict"]) for r in recs.values()] == [("crack/001.png", "good", "FAIL")]
    assert any("overruled" in m.value for m in at.main.markdown)
