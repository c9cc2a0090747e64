"""The dashboard in a real browser: `streamlit run ui/app.py` + Debian's Chromium via Playwright.

Uploads a defective sample through the page's file input and checks that the FAIL
badge and the heatmap overlay appear; saves test-artifacts/ui_fail.png.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default.onnx"
SAMPLES = ROOT / "sample_images" / "washer" / "test"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

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


@pytest.fixture(scope="module")
def server():
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--server.address", "localhost", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
                timeout=30_000)
            assert page.get_by_text("Heatmap + defect outlines").first.is_visible()
            assert page.locator(".verdict-error").count() == 0
            page.wait_for_timeout(500)  # let the layout settle for the screenshot
            page.screenshot(path=str(ARTIFACTS / "ui_fail.png"), full_page=False)
        finally:
            browser.close()
    assert (ARTIFACTS / "ui_fail.png").stat().st_size > 10_000
