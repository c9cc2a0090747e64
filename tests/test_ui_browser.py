"""The dashboard in a real browser: `streamlit run ui/app.py` + Debian's Chromium via Playwright.

Uploads a defective sample through the page's file input and checks that the FAIL
badge and the heatmap overlay appear; then walks an inspector's session end to end
(upload, inspect, move the threshold, review a scored folder, overrule two verdicts by
keyboard, export the labelled folder and the report). Screenshots go to
$UI_ARTIFACTS (default test-artifacts/).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default.onnx"
SAMPLES = ROOT / "sample_images" / "washer" / "test"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("UI_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not MODEL.is_file(), reason="models/default.onnx is missing (export a model first)"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="/usr/bin/chromium is not installed (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failing_sample() -> Path:
    """The defective sample the current model scores highest (it must be a FAIL)."""
    from anomaly.inspection.imageio import read_image
    from anomaly.inspection.inspector import Inspector

    ins = Inspector(MODEL, threads=1)
    bad = sorted(p for p in SAMPLES.glob("*/*.png") if p.parent.name != "good")
    scores = ins.score([read_image(p) for p in bad])[1]
    k = int(scores.argmax())
    assert scores[k] >= ins.image_threshold, "the model fails none of the defective samples"
    return bad[k]


FEEDBACK = ARTIFACTS / "feedback"


@pytest.fixture(scope="module")
def server():
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(FEEDBACK, ignore_errors=True)
    log = open(ARTIFACTS / "streamlit.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "ui" / "app.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "localhost",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "ANOMALY_FEEDBACK_DIR": str(FEEDBACK)},
    )
    url = f"http://localhost:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start (exit code {proc.poll()}); see test-artifacts/streamlit.log")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_upload_defect_shows_fail_and_heatmap(server):
    sample = failing_sample()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(server, wait_until="domcontentloaded")
            page.get_by_text("Visual inspection").first.wait_for(timeout=60_000)
            page.get_by_text("Trained on").first.wait_for(timeout=60_000)  # model metadata in the sidebar
            page.locator(".st-key-image_uploader input[type=file]").set_input_files(str(sample))

            badge = page.locator(".verdict-fail")
            badge.first.wait_for(state="visible", timeout=60_000)
            assert badge.first.inner_text().strip() == "FAIL"
            heat = page.locator('img[alt^="Heatmap"]')
            heat.first.wait_for(state="visible", timeout=30_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('img[alt^=\"Heatmap\"]'); return i && i.complete && i.naturalWidth > 0; }",
                timeout=30_000,
            )
            assert page.get_by_text("Heatmap + defect outlines").first.is_visible()
            assert page.locator(".verdict-error").count() == 0
            page.wait_for_timeout(500)  # let the layout settle for the screenshot
            page.screenshot(path=str(ARTIFACTS / "ui_fail.png"), full_page=False)
        finally:
            browser.close()
    assert (ARTIFACTS / "ui_fail.png").stat().st_size > 10_000


def borderline_failure() -> tuple[Path, Path, float]:
    """(the defective sample the model fails with the lowest score, the good sample it
    scores lowest, that failure's score): the failure flips to PASS within the slider."""
    from anomaly.inspection.imageio import read_image
    from anomaly.inspection.inspector import Inspector

    ins = Inspector(MODEL, threads=1)
    bad = sorted(p for p in SAMPLES.glob("*/*.png") if p.parent.name != "good")
    good = sorted((SAMPLES / "good").glob("*.png"))
    scores = ins.score([read_image(p) for p in bad])[1]
    failing = [i for i in range(len(bad)) if scores[i] >= ins.image_threshold]
    k = min(failing, key=lambda i: scores[i])
    g = int(ins.score([read_image(p) for p in good])[1].argmin())
    return bad[k], good[g], float(scores[k])


def scored_folder(tmp: Path) -> Path:
    """A real `anomaly score` run (overlays of every part) over a few samples."""
    src = tmp / "parts"
    for rel in ("good/000.png", "good/001.png", "good/002.png", "crack/001.png", "dent/001.png", "stain/001.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / rel, src / rel)
    out = tmp / "scored"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "anomaly",
            "score",
            str(src),
            "--model",
            str(MODEL),
            "--out",
            str(out),
            "--overlays",
            "all",
            "--quiet",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    assert done.returncode in (0, 1), done.returncode  # 1: some parts failed, as they should
    return out


def settle(page, ms: int = 400) -> None:
    """Wait until Streamlit has finished running the script (no 'Running…' status)."""
    page.wait_for_timeout(150)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)
    page.wait_for_timeout(ms)


def test_inspector_session_end_to_end(server, tmp_path):
    bad, good, bad_score = borderline_failure()
    out = scored_folder(tmp_path)
    shots = ARTIFACTS
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
            page.goto(server, wait_until="domcontentloaded")
            page.get_by_text("Trained on").first.wait_for(timeout=60_000)
            page.locator(".st-key-operator input").fill("Ana")
            page.keyboard.press("Enter")
            settle(page)

            # 1. upload and inspect: a defect fails, a good part passes; both named
            page.locator(".st-key-image_uploader input[type=file]").set_input_files([str(bad), str(good)])
            page.locator(".verdict-fail").first.wait_for(state="visible", timeout=60_000)
            settle(page, 800)
            titles = page.locator(".card-title").all_inner_texts()
            assert titles == [bad.name, good.name] or sorted(titles) == sorted([bad.name, good.name])
            assert page.locator(".verdict-fail").count() == 1 and page.locator(".verdict-pass").count() == 1
            assert page.get_by_text("Heatmap + defect outlines").first.is_visible()
            page.screenshot(path=str(shots / "e2e_1_inspect.png"))

            # 2. move the threshold above the failure's score: it passes, the sidebar says so
            thumb = page.locator(".st-key-threshold input[type=range]")
            thumb.focus()
            page.keyboard.press("End")  # the slider's top: 3x the calibrated threshold
            assert float(thumb.input_value()) > bad_score
            page.get_by_text("now PASS").first.wait_for(timeout=60_000)
            settle(page, 800)
            assert page.locator(".verdict-fail").count() == 0 and page.locator(".verdict-pass").count() == 2
            assert page.get_by_text("now PASS").first.is_visible()
            page.screenshot(path=str(shots / "e2e_2_threshold.png"))
            page.locator(".st-key-reset_threshold button").click()
            settle(page)
            assert page.locator(".verdict-fail").count() == 1

            # 3. review a scored folder: original beside the heatmap, regions listed, last column visible
            page.get_by_role("tab", name="Review").click()
            page.locator(".st-key-review_folder input").fill(str(out))
            page.keyboard.press("Enter")
            page.locator(".st-key-review_card .card-title").first.wait_for(timeout=60_000)
            settle(page, 800)
            card = page.locator(".st-key-review_card")
            assert card.locator(".verdict-fail").count() == 1  # failures first
            assert card.get_by_text("Original", exact=True).first.is_visible()
            assert card.get_by_text("Heatmap (saved overlay", exact=False).first.is_visible()
            regions = card.locator("table.regions")
            assert regions.count() == 1 and "Position (x, y)" in regions.inner_text()
            last, box = regions.locator("th").last.bounding_box(), card.bounding_box()
            assert last["x"] + last["width"] <= box["x"] + box["width"], "the region table's last column is cut off"
            first_title = card.locator(".card-title").inner_text()
            regions.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "e2e_3_review.png"))

            # 4. overrule two verdicts by keyboard (G: good, D: defect), moving on with the right arrow
            overruled = []
            for _ in range(2):
                title = card.locator(".card-title").inner_text()
                verdict = card.locator(".verdict").inner_text().strip()
                page.evaluate("() => document.activeElement && document.activeElement.blur()")  # keys to the page
                page.keyboard.press("g" if verdict == "FAIL" else "d")
                page.locator(".st-key-review_card .decision-overruled").wait_for(timeout=30_000)
                settle(page)
                overruled.append(title)
                page.keyboard.press("ArrowRight")
                page.wait_for_function(
                    "t => document.querySelector('.st-key-review_card .card-title')?.innerText !== t",
                    arg=title,
                    timeout=30_000,
                )
                settle(page)
            assert overruled[0] == first_title and len(set(overruled)) == 2
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "t => document.querySelector('.st-key-review_card .card-title')?.innerText === t",
                arg=overruled[1],
                timeout=30_000,
            )
            settle(page)
            assert "overruled" in card.locator(".decision").inner_text()
            recs = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
            assert [r["path"] for r in recs] == overruled and {r["operator"] for r in recs} == {"Ana"}
            reviewed = page.locator('[data-testid="stMetric"]', has_text="Reviewed")
            assert reviewed.count() == 1 and reviewed.inner_text().split()[-1] == "2"
            page.locator(".st-key-review_table").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "e2e_4_overruled.png"))

            # 5. export the labelled folder and the report
            with page.expect_download(timeout=60_000) as dl:
                page.locator(".st-key-review_dl_labelled button").first.click()
            labelled = tmp_path / "labelled.zip"
            dl.value.save_as(labelled)
            with zipfile.ZipFile(labelled) as zf:
                names = zf.namelist()
            assert sum("/test/good/" in n or "/test/defect/" in n for n in names) == 2
            settle(page)
            with page.expect_download(timeout=120_000) as dl:
                page.locator(".st-key-review_dl_report button").first.click()
            report = tmp_path / "report.html"
            dl.value.save_as(report)
            text = report.read_text()
            assert "Model digest" in text and "Threshold" in text and "Ana" in text and "<svg" in text
            page.goto(report.as_uri())
            page.wait_for_timeout(500)
            assert page.locator("section.part").count() >= 1
            page.screenshot(path=str(shots / "e2e_5_report.png"), full_page=False)
        finally:
            browser.close()
